//! The headers of every request that creates an object (ACL, server-side encryption and its KMS
//! key, storage class, checksum algorithm), typed once and applied by one function per request
//! kind: the uploads' PutObject, CreateMultipartUpload and UploadPart, the manifest's PutObject
//! and the destination probe's all go through here, so the probe cannot test other headers than
//! the uploads send. `ExpectedBucketOwner` is not here: the S3 client of a target adds it to
//! every request (`credentials::s3_config`).

use aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder;
use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder;
use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption, StorageClass};

use crate::checksum::ChecksumAlgorithm;

/// The ACL that is always safe to send: S3 accepts it even where ACLs are disabled
/// (BucketOwnerEnforced), and buckets that take cross-account writes often require it.
pub const BUCKET_OWNER_FULL_CONTROL: &str = "bucket-owner-full-control";

/// The object-write headers a destination decides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteHeaders {
    pub checksum: ChecksumAlgorithm,
    pub acl: Option<ObjectCannedAcl>,
    pub sse: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<StorageClass>,
}

impl WriteHeaders {
    /// The headers from their text form (the Job's environment, the destination's spec); an
    /// empty value counts as unset. Refuses what S3 does not know.
    pub fn parse(
        acl: Option<&str>,
        sse: Option<&str>,
        sse_kms_key_id: Option<&str>,
        storage_class: Option<&str>,
        checksum: ChecksumAlgorithm,
    ) -> Result<WriteHeaders, String> {
        fn set(value: Option<&str>) -> Option<&str> {
            value.filter(|v| !v.is_empty())
        }
        let sse = match set(sse) {
            None => None,
            Some("AES256") => Some(ServerSideEncryption::Aes256),
            Some("aws:kms") => Some(ServerSideEncryption::AwsKms),
            Some(other) => {
                return Err(format!(
                    "unknown server-side encryption {other:?}: use AES256 or aws:kms"
                ));
            }
        };
        let sse_kms_key_id = set(sse_kms_key_id).map(str::to_string);
        if sse_kms_key_id.is_some() && sse != Some(ServerSideEncryption::AwsKms) {
            return Err("a KMS key id needs server-side encryption aws:kms".into());
        }
        let acl = match set(acl) {
            None => None,
            Some(text) if ObjectCannedAcl::values().contains(&text) => {
                Some(ObjectCannedAcl::from(text))
            }
            Some(text) => return Err(format!("unknown canned ACL {text:?}")),
        };
        let storage_class = match set(storage_class) {
            None => None,
            Some(text) if StorageClass::values().contains(&text) => Some(StorageClass::from(text)),
            Some(text) => return Err(format!("unknown storage class {text:?}")),
        };
        Ok(WriteHeaders {
            checksum,
            acl,
            sse,
            sse_kms_key_id,
            storage_class,
        })
    }

    /// The same headers with another ACL (the probe's second try that tells an ACL the bucket
    /// refuses from a missing permission).
    pub fn with_acl(&self, acl: Option<ObjectCannedAcl>) -> WriteHeaders {
        WriteHeaders {
            acl,
            ..self.clone()
        }
    }

    /// A PutObject with these headers and `checksum`, the body's checksum in this algorithm
    /// (base64). The algorithm is named beside its value (x-amz-sdk-checksum-algorithm): moto
    /// stores a checksum only when told which it is; the SDK computes nothing more.
    pub fn put(&self, request: PutObjectFluentBuilder, checksum: &str) -> PutObjectFluentBuilder {
        let request = request
            .set_acl(self.acl.clone())
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class.clone())
            .checksum_algorithm(self.checksum.sdk());
        match self.checksum {
            ChecksumAlgorithm::Crc64Nvme => request.checksum_crc64_nvme(checksum),
            ChecksumAlgorithm::Crc32C => request.checksum_crc32_c(checksum),
            ChecksumAlgorithm::Sha256 => request.checksum_sha256(checksum),
        }
    }

    /// A CopyObject with these headers, asking the server for the new object's checksum in this
    /// algorithm (it computes it from the bytes it copies).
    pub fn copy(&self, request: CopyObjectFluentBuilder) -> CopyObjectFluentBuilder {
        request
            .set_acl(self.acl.clone())
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class.clone())
            .checksum_algorithm(self.checksum.sdk())
    }

    /// A CreateMultipartUpload with these headers, asking for the checksum type the algorithm
    /// gives a multipart object (full-object for the CRCs, composite for SHA-256).
    pub fn create(
        &self,
        request: CreateMultipartUploadFluentBuilder,
    ) -> CreateMultipartUploadFluentBuilder {
        request
            .set_acl(self.acl.clone())
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.sse_kms_key_id.clone())
            .set_storage_class(self.storage_class.clone())
            .checksum_algorithm(self.checksum.sdk())
            .checksum_type(ChecksumAlgorithm::sdk_kind(self.checksum.multipart_kind()))
    }

    /// An UploadPart with the part's checksum (base64) in this algorithm. Parts carry nothing
    /// else: S3 takes the ACL, SSE and storage class of the upload from its creation.
    pub fn part(
        &self,
        request: UploadPartFluentBuilder,
        checksum: &str,
    ) -> UploadPartFluentBuilder {
        match self.checksum {
            ChecksumAlgorithm::Crc64Nvme => request.checksum_crc64_nvme(checksum),
            ChecksumAlgorithm::Crc32C => request.checksum_crc32_c(checksum),
            ChecksumAlgorithm::Sha256 => request.checksum_sha256(checksum),
        }
    }

    /// The headers as they go on the wire (`x-amz-acl: bucket-owner-full-control`, ...), for
    /// messages; the KMS key id is named, it is no secret.
    pub fn describe(&self) -> Vec<String> {
        let mut headers = Vec::new();
        if let Some(acl) = &self.acl {
            headers.push(format!("x-amz-acl: {}", acl.as_str()));
        }
        if let Some(sse) = &self.sse {
            headers.push(format!("x-amz-server-side-encryption: {}", sse.as_str()));
        }
        if let Some(key) = &self.sse_kms_key_id {
            headers.push(format!(
                "x-amz-server-side-encryption-aws-kms-key-id: {key}"
            ));
        }
        if let Some(class) = &self.storage_class {
            headers.push(format!("x-amz-storage-class: {}", class.as_str()));
        }
        headers.push(format!(
            "x-amz-sdk-checksum-algorithm: {}",
            self.checksum.name()
        ));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_settings_become_typed_headers_and_unknown_ones_are_refused() {
        let h = WriteHeaders::parse(
            Some("bucket-owner-full-control"),
            Some("aws:kms"),
            Some("key-1"),
            Some("STANDARD_IA"),
            ChecksumAlgorithm::Crc32C,
        )
        .unwrap();
        assert_eq!(h.acl, Some(ObjectCannedAcl::BucketOwnerFullControl));
        assert_eq!(h.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(h.sse_kms_key_id.as_deref(), Some("key-1"));
        assert_eq!(h.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(
            h.describe(),
            [
                "x-amz-acl: bucket-owner-full-control",
                "x-amz-server-side-encryption: aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id: key-1",
                "x-amz-storage-class: STANDARD_IA",
                "x-amz-sdk-checksum-algorithm: CRC32C",
            ]
        );
        let empty =
            WriteHeaders::parse(Some(""), Some(""), None, None, ChecksumAlgorithm::Crc64Nvme)
                .unwrap();
        assert_eq!(
            empty,
            WriteHeaders {
                checksum: ChecksumAlgorithm::Crc64Nvme,
                ..Default::default()
            }
        );
        let parse = |acl, sse, kms, class| {
            WriteHeaders::parse(acl, sse, kms, class, ChecksumAlgorithm::Crc64Nvme)
        };
        assert!(parse(Some("everyone"), None, None, None).is_err());
        assert!(parse(None, Some("rot13"), None, None).is_err());
        assert!(parse(None, Some("AES256"), Some("key-1"), None).is_err());
        assert!(parse(None, None, None, Some("COLD")).is_err());
        assert_eq!(
            h.with_acl(None),
            WriteHeaders {
                acl: None,
                ..h.clone()
            }
        );
    }
}
