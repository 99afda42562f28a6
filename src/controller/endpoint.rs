//! Which S3 and STS endpoints a destination may name: https only, and no loopback, link-local or
//! cloud metadata address, unless the admin allowed them when starting the operator. A namespace's
//! users write destinations, and an endpoint is where the operator (and the upload pods) send
//! signed requests, so an endpoint is a way to make the operator reach inside the cluster or the
//! node. Pure, except [`check_resolved`] (a DNS lookup).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the admin allowed (`outbound run --allow-http-endpoints`, `--allow-private-endpoints`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Plain `http://` endpoints.
    pub allow_http: bool,
    /// Loopback, link-local and cloud metadata addresses.
    pub allow_private: bool,
}

/// An endpoint's host and port, as the HTTP client will read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// Why an address may not be reached, or `None`.
fn address_class(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        // ::ffff:127.0.0.1 reaches 127.0.0.1.
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("a cloud metadata address")
            } else if v4.is_loopback() || v4.is_unspecified() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("a link-local address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            // AWS's IPv6 instance metadata endpoint.
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("a cloud metadata address")
            } else if v6.is_loopback() || v6.is_unspecified() {
                Some("a loopback address")
            } else if v6.is_unicast_link_local() {
                Some("a link-local address")
            } else {
                None
            }
        }
    }
}

/// Host names that always mean this machine or a metadata service.
fn name_class(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        Some("a loopback address")
    } else if host == "metadata.google.internal" || host == "metadata" {
        Some("a cloud metadata address")
    } else {
        None
    }
}

/// Checks the URL of `field` (e.g. `spec.s3.endpoint`) against the policy without looking the
/// name up: the message names the field and why it is refused.
pub fn check(field: &str, url: &str, policy: EndpointPolicy) -> Result<Endpoint, String> {
    // The URL is only quoted once it is known to carry no credentials (`user:password@`), which
    // would end up in status and logs and hide the real host from a reader.
    let uri: http::Uri = url.parse().map_err(|_| format!("{field} is not a URL"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("{field} must not carry a user name or password"));
    }
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{field} {url:?} must be an https:// URL")),
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("{field} {url:?} names no host"));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    if !policy.allow_private {
        let class = match host.parse::<IpAddr>() {
            Ok(ip) => address_class(ip),
            Err(_) => name_class(host),
        };
        if let Some(class) = class {
            return Err(format!(
                "{field} {url} is {class}, which the operator does not reach unless started with --allow-private-endpoints"
            ));
        }
    }
    if !https && !policy.allow_http {
        return Err(format!(
            "{field} {url} uses plain http: use https, or start the operator with --allow-http-endpoints"
        ));
    }
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// Both checks of a URL: as written ([`check`]) and as its name resolves ([`check_resolved`]).
pub async fn allowed(field: &str, url: &str, policy: EndpointPolicy) -> Result<(), String> {
    let parsed = check(field, url, policy)?;
    check_resolved(field, url, &parsed, policy).await
}

/// Looks the host up and refuses it when any of its addresses is one the policy forbids (a name
/// such as `localtest.me`, or a number like `2130706433`, leads to 127.0.0.1 too). A name that
/// does not resolve passes here: the probe then reports it `Unreachable`.
pub async fn check_resolved(
    field: &str,
    url: &str,
    endpoint: &Endpoint,
    policy: EndpointPolicy,
) -> Result<(), String> {
    if policy.allow_private || endpoint.host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let Ok(addresses) = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await
    else {
        return Ok(());
    };
    for address in addresses {
        if let Some(class) = address_class(address.ip()) {
            return Err(format!(
                "{field} {url} resolves to {class} ({}), which the operator does not reach unless started with --allow-private-endpoints",
                address.ip()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: EndpointPolicy = EndpointPolicy {
        allow_http: false,
        allow_private: false,
    };

    fn refused(url: &str, policy: EndpointPolicy) -> String {
        check("spec.s3.endpoint", url, policy).expect_err(url)
    }

    #[test]
    fn https_to_a_public_name_or_address_is_allowed() {
        for url in [
            "https://s3.eu-west-1.amazonaws.com",
            "https://minio.storage.svc:9000/",
            "https://10.0.0.5:9000",
            "https://[2001:db8::1]:443",
        ] {
            check("spec.s3.endpoint", url, STRICT).expect(url);
        }
        let e = check("f", "https://minio:9000", STRICT).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("minio", 9000));
        assert_eq!(
            check(
                "f",
                "http://x",
                EndpointPolicy {
                    allow_http: true,
                    ..STRICT
                }
            )
            .unwrap()
            .port,
            80
        );
    }

    #[test]
    fn plain_http_needs_the_flag() {
        let msg = refused("http://minio.storage.svc:9000", STRICT);
        assert!(
            msg.contains("spec.s3.endpoint")
                && msg.contains("plain http")
                && msg.contains("--allow-http-endpoints"),
            "{msg}"
        );
        let http = EndpointPolicy {
            allow_http: true,
            ..STRICT
        };
        check("f", "http://minio.storage.svc:9000", http).unwrap();
        assert!(refused("ftp://minio", http).contains("https://"));
        assert!(refused("minio:9000", http).contains("https://"));
    }

    #[test]
    fn loopback_link_local_and_metadata_need_the_other_flag() {
        let cases = [
            ("https://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://169.254.169.254", "metadata"),
            ("https://[fd00:ec2::254]", "metadata"),
            ("https://metadata.google.internal", "metadata"),
            ("https://METADATA.google.internal.", "metadata"),
            ("https://127.0.0.1:7070", "loopback"),
            ("https://127.8.9.10", "loopback"),
            ("https://0.0.0.0", "loopback"),
            ("https://[::1]:9000", "loopback"),
            ("https://[::ffff:127.0.0.1]", "loopback"),
            ("https://localhost:9000", "loopback"),
            ("https://s3.localhost", "loopback"),
            ("https://169.254.10.20", "link-local"),
            ("https://[fe80::1]", "link-local"),
        ];
        for (url, class) in cases {
            let msg = refused(url, STRICT);
            assert!(
                msg.contains(class) && msg.contains("--allow-private-endpoints"),
                "{url}: {msg}"
            );
        }
        let private = EndpointPolicy {
            allow_http: true,
            allow_private: true,
        };
        for (url, _) in cases {
            check("f", url, private).expect(url);
        }
        // Allowing private addresses does not allow plain http.
        let only_private = EndpointPolicy {
            allow_private: true,
            ..STRICT
        };
        assert!(refused("http://127.0.0.1:7070", only_private).contains("plain http"));
    }

    #[test]
    fn user_info_is_refused() {
        let msg = refused("https://user:pw@s3.amazonaws.com", STRICT);
        assert!(!msg.contains("pw"), "{msg}");
    }

    #[tokio::test]
    async fn names_that_lead_to_loopback_are_refused_after_lookup() {
        let url = "https://localhost.:9000";
        // The literal check catches `localhost`; a numeric host the resolver reads as 127.0.0.1
        // shows the lookup at work.
        assert!(check("f", url, STRICT).is_err());
        let numeric = "https://2130706433:9000";
        let endpoint = check("f", numeric, STRICT).expect("not an address literal Rust knows");
        let msg = check_resolved("f", numeric, &endpoint, STRICT)
            .await
            .expect_err("2130706433 is 127.0.0.1");
        assert!(msg.contains("loopback"), "{msg}");
    }
}
