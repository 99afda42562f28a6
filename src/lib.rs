//! Outbound: a Kubernetes operator that delivers data files into customers' S3 buckets.

pub mod api;
pub mod checksum;
pub mod controller;
pub mod crc64;
pub mod credentials;
pub mod cron;
pub mod job;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod probe;
pub mod shard;
pub mod status;
pub mod template;
pub mod tenancy;
pub mod units;
pub mod upload;
pub mod validate;
