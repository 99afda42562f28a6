//! Outbound: a Kubernetes operator that delivers data files into customers' S3 buckets.

pub mod api;
pub mod controller;
pub mod credentials;
pub mod upload;
