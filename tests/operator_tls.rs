//! An S3-compatible endpoint whose certificate comes from a private CA (the ground's own, in
//! `$GROUND_STATE/pki`): given to the destination as `caBundle`, the operator's probe and the
//! upload pods trust it besides the system's trust store, with nothing turned off; without it the
//! certificate is refused and the probe says so; a bundle that is no certificate is refused with
//! its own reason.

mod operator_support;

use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use operator_support::*;
use outbound::api::{OutboundDelivery, OutboundDestination};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// An HTTPS front on 127.0.0.1 for `upstream` (plain http), serving a certificate for IP
/// 127.0.0.1 that the ground's CA signs: its URL.
async fn tls_front(upstream: &str, dir: &Path) -> String {
    let pki = Path::new(&std::env::var("GROUND_STATE").expect("GROUND_STATE from the ground"))
        .join("pki");
    let (key, csr, crt, ext) = (
        dir.join("s3.key"),
        dir.join("s3.csr"),
        dir.join("s3.crt"),
        dir.join("s3.ext"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    for args in [
        vec![
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=outbound-test-s3",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            pki.join("ca.crt").to_str().unwrap(),
            "-CAkey",
            pki.join("ca.key").to_str().unwrap(),
            "-set_serial",
            "4242",
            "-days",
            "1",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            crt.to_str().unwrap(),
        ],
    ] {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends here: nothing to forward.
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    url
}

/// The ground's CA as a destination's `caBundle`: the probe validates the HTTPS endpoint and a
/// delivery through it succeeds byte for byte, its Job carrying the bundle; the same endpoint
/// without the bundle is refused for its certificate; a bundle that is no certificate gets
/// `InvalidCABundle`.
#[tokio::test]
async fn an_endpoint_of_a_private_ca_is_trusted_with_its_bundle_and_only_then() {
    let mut world = World::new("tls").await;
    let env = &world.env;
    let admin = world.ground_s3().await;
    let bucket = format!("tls-{}", suffix());
    admin.create_bucket().bucket(&bucket).send().await.unwrap();
    let front = tls_front(&env.s3_endpoint, world.dir.path()).await;
    let ca = std::fs::read_to_string(
        Path::new(&std::env::var("GROUND_STATE").unwrap()).join("pki/ca.crt"),
    )
    .unwrap();
    world.ground_keys_secret("keys").await;
    let destination = |name: &str, bundle: Option<&str>| {
        let bundle = bundle
            .map(|b| format!("    caBundle: {}\n", serde_json::to_string(b).unwrap()))
            .unwrap_or_default();
        format!(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDestination\nmetadata: {{name: {name}}}\nspec:\n  s3:\n    bucket: {bucket}\n    endpoint: \"{front}\"\n    forcePathStyle: true\n{bundle}  credentials: {{secret: {{name: keys}}}}\n"
        )
    };
    for (name, bundle) in [
        ("private-ca", Some(ca.as_str())),
        ("no-bundle", None),
        (
            "broken",
            Some("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"),
        ),
    ] {
        world
            .apply_yaml::<OutboundDestination>(&destination(name, bundle))
            .await
            .unwrap();
    }
    let folder = world.volume("exports").await;
    let body: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("{i:09}{}\n", "t".repeat(40)).into_bytes())
        .collect();
    std::fs::write(folder.join("a.sync"), &body).unwrap();
    world
        .apply_yaml::<OutboundDelivery>(
            "apiVersion: outbound.dev/v1alpha1\nkind: OutboundDelivery\nmetadata: {name: over-tls}\nspec:\n  destinationRef: {name: private-ca}\n  source: {volume: {claimName: exports}}\n",
        )
        .await
        .unwrap();
    world.start_operator();

    world
        .wait_destination("private-ca", "True", "Validated")
        .await;
    let refused = wait_for(
        "the destination without the bundle to be refused",
        Duration::from_secs(60),
        || async {
            let d = world.destination("no-bundle").await;
            d.status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
                .then_some(d)
        },
        || world.diagnose(),
    )
    .await;
    let (reason, message) = ready_of(&refused.status.unwrap().conditions);
    assert!(
        message.contains("TLS certificate is not trusted") && message.contains("caBundle"),
        "{reason}: {message}"
    );
    let broken = world
        .wait_destination("broken", "False", "InvalidCABundle")
        .await;
    let (_, message) = ready_of(&broken.status.unwrap().conditions);
    assert!(message.contains("spec.s3.caBundle"), "{message}");

    world
        .wait_delivery(
            "over-tls",
            "Succeeded",
            Some("Delivered"),
            Duration::from_secs(120),
        )
        .await;
    let stored = admin
        .get_object()
        .bucket(&bucket)
        .key("a.sync")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert!(stored == body, "the object is not the file");
    let jobs = world
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let envs = jobs.items[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        envs.iter()
            .any(|e| e.name == "OUTBOUND_CA_BUNDLE" && e.value.as_deref() == Some(ca.as_str())),
        "the Job carries the bundle"
    );
    world.cleanup().await;
}
