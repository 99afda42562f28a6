//! Resolve S3 credentials for the three access modes (keys, workload identity, assumed role) into AWS SDK clients.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// How the writer authenticates to the customer's bucket.
#[derive(Clone)]
pub enum Access {
    /// Keys handed over by the customer (from a Kubernetes Secret or the environment).
    Keys {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// Our own workload identity through the AWS default chain (IRSA, Pod Identity, instance
    /// profile, environment); the customer allowlists it in the bucket policy.
    WorkloadIdentity,
    /// A role in the customer's account assumed on top of our workload identity.
    AssumeRole {
        role_arn: String,
        external_id: Option<String>,
        session_name: String,
    },
}

/// An access key id as status may show it: the first and last four characters, and only when the
/// value has an access key id's shape (`AKIA…WXYZ`). A Secret key may hold anything (a database
/// password by mistake), so a value of any other shape is not shown at all.
pub fn masked_access_key_id(value: &str) -> Option<String> {
    let shaped = (16..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    shaped.then(|| format!("{}\u{2026}{}", &value[..4], &value[value.len() - 4..]))
}

// Hand-written so that a stray `{:?}` can never print a secret (nor an access key id that is
// something else, a password put in the wrong Secret key).
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Keys { access_key_id, .. } => f
                .debug_struct("Keys")
                .field("access_key_id", &masked_access_key_id(access_key_id))
                .finish_non_exhaustive(),
            Access::WorkloadIdentity => f.write_str("WorkloadIdentity"),
            Access::AssumeRole {
                role_arn,
                session_name,
                ..
            } => f
                .debug_struct("AssumeRole")
                .field("role_arn", role_arn)
                .field("session_name", session_name)
                .finish_non_exhaustive(),
        }
    }
}

/// Where the bucket lives.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub region: String,
    /// An S3-compatible endpoint (also used for STS when set); `None` means AWS itself.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// The STS endpoint, when not `endpoint` (a private STS, or an S3 server without one).
    pub sts_endpoint: Option<String>,
    /// The account that must own the bucket (`x-amz-expected-bucket-owner` on every request).
    pub expected_bucket_owner: Option<String>,
    /// PEM certificates of a private CA trusted besides the system's (an S3-compatible server's).
    pub ca_bundle: Option<String>,
}

impl Target {
    /// Where STS is: `sts_endpoint`, else `endpoint`, else AWS.
    pub fn sts_url(&self) -> Option<&str> {
        self.sts_endpoint.as_deref().or(self.endpoint.as_deref())
    }
}

/// Checks that `pem` holds at least one certificate and nothing unreadable: the message says
/// what is wrong with `field`.
pub fn check_ca_bundle(field: &str, pem: &str) -> Result<(), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    // The SDK's client panics on a certificate it cannot read: every one is tried here first,
    // the same way (PEM, then a root store).
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("{field} holds an unreadable certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{field} holds an unreadable certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{field} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(())
}

/// The SDK's HTTPS client trusting the system's roots and `bundle` besides: nothing is turned
/// off, the server's certificate and name are checked as always. `None` when the bundle cannot
/// be used (checked beforehand by [`check_ca_bundle`]; the endpoint then fails its TLS check).
fn https_client_trusting(
    bundle: &str,
) -> Option<aws_smithy_runtime_api::client::http::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    if let Err(message) = check_ca_bundle("the CA bundle", bundle) {
        tracing::error!(%message, "the CA bundle cannot be used");
        return None;
    }
    let trust = tls::TrustStore::default().with_pem_certificate(bundle.as_bytes().to_vec());
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| tracing::error!(error = %e, "the CA bundle cannot be used"))
        .ok()?;
    Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https(),
    )
}

/// The loader with the target's private CA, if it names one.
fn with_ca_bundle(loader: aws_config::ConfigLoader, target: &Target) -> aws_config::ConfigLoader {
    match target.ca_bundle.as_deref().and_then(https_client_trusting) {
        Some(client) => loader.http_client(client),
        None => loader,
    }
}

/// The workload identity without the environment's keys (web identity token, container
/// credentials, instance metadata): what reads a provider's bucket when no keys are given for it,
/// since in an upload pod `AWS_ACCESS_KEY_ID` may be the destination's.
pub async fn workload_identity_config(target: &Target) -> SdkConfig {
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_config::provider_config::ProviderConfig;
    let region = Region::new(target.region.clone());
    let provider = ProviderConfig::default().with_region(Some(region.clone()));
    let chain = CredentialsProviderChain::first_try(
        "WebIdentityToken",
        aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder()
            .configure(&provider)
            .build(),
    )
    .or_else(
        "EcsContainer",
        aws_config::ecs::EcsCredentialsProvider::builder()
            .configure(&provider)
            .build(),
    )
    .or_else(
        "Ec2InstanceMetadata",
        aws_config::imds::credentials::ImdsCredentialsProvider::builder()
            .configure(&provider)
            .build(),
    );
    let mut loader = with_ca_bundle(
        aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(chain),
        target,
    );
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// Builds the SDK configuration for an access mode. Assumed-role credentials are cached and
/// refreshed by the SDK before they expire, so long uploads survive one-hour sessions.
pub async fn sdk_config(access: &Access, target: &Target) -> SdkConfig {
    let mut loader = with_ca_bundle(
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(target.region.clone())),
        target,
    );
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    match access {
        Access::Keys {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "outbound-keys",
            ));
            loader.load().await
        }
        Access::WorkloadIdentity => loader.load().await,
        Access::AssumeRole {
            role_arn,
            external_id,
            session_name,
        } => {
            let base = loader.load().await;
            let mut builder =
                aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name(session_name);
            if let Some(external_id) = external_id {
                builder = builder.external_id(external_id);
            }
            // The provider's own STS client, at the target's STS (not only its S3) endpoint.
            let provider = builder.configure(&sts_config(&base, target)).build().await;
            base.into_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
    }
}

/// Sends `x-amz-expected-bucket-owner` with every request of a client, so that S3 refuses (403)
/// any request to a bucket another account owns (a deleted and re-registered bucket name, a
/// typo). One interceptor instead of a setter on each call: no request can be left out.
#[derive(Debug)]
struct ExpectedBucketOwner(String);

impl aws_sdk_s3::config::Intercept for ExpectedBucketOwner {
    fn name(&self) -> &'static str {
        "ExpectedBucketOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-amz-expected-bucket-owner", self.0.clone());
        Ok(())
    }
}

/// The S3 client configuration of a target: path-style addressing when asked, and the expected
/// bucket owner on every request.
pub fn s3_config(config: &SdkConfig, target: &Target) -> aws_sdk_s3::config::Builder {
    let mut builder =
        aws_sdk_s3::config::Builder::from(config).force_path_style(target.force_path_style);
    if let Some(owner) = &target.expected_bucket_owner {
        builder = builder.interceptor(ExpectedBucketOwner(owner.clone()));
    }
    builder
}

/// An S3 client for the target (see `s3_config`).
pub fn s3_client(config: &SdkConfig, target: &Target) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(s3_config(config, target).build())
}

/// The configuration with the target's STS endpoint in place of its S3 endpoint.
pub fn sts_config(config: &SdkConfig, target: &Target) -> SdkConfig {
    match target.sts_url() {
        Some(url) => config.to_builder().endpoint_url(url).build(),
        None => config.clone(),
    }
}

/// An STS client on the same configuration, at the target's STS endpoint.
pub fn sts_client(config: &SdkConfig, target: &Target) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(&sts_config(config, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The request head a client sends to a one-shot local server (answered 200, empty).
    async fn request_head(target: Target) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target {
            endpoint: Some(format!("http://{}", listener.local_addr().unwrap())),
            force_path_style: true,
            region: "us-east-1".into(),
            ..target
        };
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        let access = Access::Keys {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        let config = sdk_config(&access, &target).await;
        let _ = s3_client(&config, &target)
            .head_bucket()
            .bucket("bkt")
            .send()
            .await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn the_expected_bucket_owner_is_on_the_wire_only_when_named() {
        let named = request_head(Target {
            expected_bucket_owner: Some("111122223333".into()),
            ..Default::default()
        })
        .await;
        assert!(
            named.contains("x-amz-expected-bucket-owner: 111122223333"),
            "{named}"
        );
        let unnamed = request_head(Target::default()).await;
        assert!(
            !unnamed.contains("x-amz-expected-bucket-owner"),
            "{unnamed}"
        );
    }

    #[test]
    fn sts_goes_to_its_own_endpoint_else_the_s3_one() {
        let mut target = Target {
            endpoint: Some("https://s3.internal".into()),
            ..Default::default()
        };
        assert_eq!(target.sts_url(), Some("https://s3.internal"));
        target.sts_endpoint = Some("https://sts.internal".into());
        assert_eq!(target.sts_url(), Some("https://sts.internal"));
        assert_eq!(Target::default().sts_url(), None);
    }

    #[tokio::test]
    async fn a_bundle_is_checked_before_the_sdk_sees_it() {
        let broken = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n";
        let err = check_ca_bundle("spec.s3.caBundle", broken).unwrap_err();
        assert!(
            err.starts_with("spec.s3.caBundle holds an unreadable certificate"),
            "{err}"
        );
        let err = check_ca_bundle("spec.s3.caBundle", "no pem here").unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        // An unusable bundle never reaches the SDK's client (which would panic on it).
        let target = Target {
            endpoint: Some("https://127.0.0.1:9".into()),
            force_path_style: true,
            region: "us-east-1".into(),
            ca_bundle: Some(broken.into()),
            ..Default::default()
        };
        let config = sdk_config(&Access::WorkloadIdentity, &target).await;
        let sent = s3_client(&config, &target)
            .head_bucket()
            .bucket("b")
            .send()
            .await;
        assert!(sent.is_err());
    }
}
