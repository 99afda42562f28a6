//! Receipts by webhook: when a delivery ends, one CloudEvents 1.0 JSON message (structured mode)
//! to the URL its spec names, signed with HMAC-SHA256 when a Secret key is given. The event is
//! built purely here; `send` posts it once (the caller retries with backoff and records the
//! outcome in the delivery's status, never holding the delivery back).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-outbound-signature";

/// What a receipt says about a delivery that ended.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub namespace: String,
    pub delivery: String,
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub destination: String,
    /// `Succeeded` or `Failed`.
    pub phase: String,
    pub reason: String,
    pub message: String,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub manifest_key: Option<String>,
    pub objects: u64,
    pub bytes: u64,
    /// When the delivery ended (RFC 3339).
    pub time: String,
}

/// The CloudEvent of a receipt: its id is stable (the delivery's uid and outcome), so a
/// receiver that sees it twice (a retry after a lost answer) can tell.
pub fn cloud_event(receipt: &Receipt) -> serde_json::Value {
    let outcome = receipt.phase.to_ascii_lowercase();
    serde_json::json!({
        "specversion": "1.0",
        "type": format!("dev.outbound.delivery.{outcome}"),
        "source": format!("/namespaces/{}/outbounddeliveries/{}", receipt.namespace, receipt.delivery),
        "id": format!("{}-{outcome}", receipt.uid),
        "time": receipt.time,
        "subject": receipt.delivery,
        "datacontenttype": "application/json",
        "data": receipt,
    })
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts `event` to `url` once, signed with `key` when given. Errors are said by class (status
/// code, timeout, connection), never with the receiver's answer: it is not ours to echo.
pub async fn send(url: &str, event: &serde_json::Value, key: Option<&[u8]>) -> Result<(), String> {
    use http_body_util::{BodyExt, Full};
    let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("no trust store: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<bytes::Bytes>>(connector);
    let mut request = hyper::Request::post(url)
        .header("content-type", "application/cloudevents+json")
        .header(
            "user-agent",
            concat!("outbound/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(key) = key {
        request = request.header(SIGNATURE_HEADER, signature(key, &body));
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("invalid webhook URL: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| {
            if e.is_connect() {
                "connection refused or unreachable".to_string()
            } else {
                "the request failed before an answer".to_string()
            }
        })?;
    let status = response.status();
    // Read (and drop) the answer so the connection is reused or closed cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered HTTP {}", status.as_u16()))
    }
}

/// Attempts before a receipt is given up (with backoff 2 s, 4 s ... capped at 5 minutes: about
/// 40 minutes in all).
pub const MAX_ATTEMPTS: i32 = 12;

/// The wait before attempt `attempts + 1`.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs((1u64 << attempts.clamp(1, 9)).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_event_names_its_delivery_and_outcome_stably() {
        let receipt = Receipt {
            namespace: "team".into(),
            delivery: "acme-daily-1796619600".into(),
            uid: "u-1".into(),
            schedule: Some("acme-daily".into()),
            destination: "acme".into(),
            phase: "Succeeded".into(),
            reason: "Delivered".into(),
            message: "delivered 2/2 objects, 100%".into(),
            bucket: Some("acme-inbound".into()),
            prefix: Some("2026-12-07/".into()),
            manifest_key: Some("2026-12-07/acme-daily_2026-12-07.info".into()),
            objects: 2,
            bytes: 10,
            time: "2026-12-07T05:00:09Z".into(),
        };
        let event = cloud_event(&receipt);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "dev.outbound.delivery.succeeded");
        assert_eq!(event["id"], "u-1-succeeded");
        assert_eq!(
            event["source"],
            "/namespaces/team/outbounddeliveries/acme-daily-1796619600"
        );
        assert_eq!(
            event["data"]["manifestKey"],
            "2026-12-07/acme-daily_2026-12-07.info"
        );
        assert!(backoff(1) < backoff(5) && backoff(20) == Duration::from_secs(300));
    }
}
