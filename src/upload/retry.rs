//! One retry policy for every S3 request of the engine: which failures get another round, how
//! long to wait, and when to give up. Giving up never aborts anything: the caller's error says
//! whether it was transient (the pod exits retryable and the next one resumes) or permanent.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng as _;

use super::error::S3Cause;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait up to this long (full jitter below it), then try again.
    Retry(Duration),
    /// Return the failure to the caller.
    GiveUp,
}

/// Rounds of retries on top of the SDK's own attempts (which already retry each request a few
/// times with backoff): a round starts once the SDK gave up on a retryable cause.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub rounds: u32,
    /// Set once the run is stopping (another object failed): no new round starts.
    pub stop: Arc<AtomicBool>,
}

impl RetryPolicy {
    pub fn new(rounds: u32) -> RetryPolicy {
        RetryPolicy {
            rounds,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Pure: whether round `round` (1-based) follows a failure with `cause`.
    pub fn decide(&self, cause: &S3Cause, round: u32, stopping: bool) -> Decision {
        if !cause.retryable || round > self.rounds || stopping {
            return Decision::GiveUp;
        }
        // 0.5 s, 1 s, 2 s ... capped at 20 s: throttling needs the server to see less of us.
        let cap = Duration::from_millis(250u64 << round.min(7)).min(Duration::from_secs(20));
        Decision::Retry(cap)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs `attempt` until it succeeds or the policy gives up; `what` and `key` name the request
    /// in the log.
    pub async fn run<T, F, Fut>(&self, what: &str, key: &str, mut attempt: F) -> Result<T, S3Cause>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, S3Cause>>,
    {
        let mut round = 0;
        loop {
            let cause = match attempt().await {
                Ok(value) => return Ok(value),
                Err(cause) => cause,
            };
            round += 1;
            match self.decide(&cause, round, self.stopping()) {
                Decision::GiveUp => return Err(cause),
                Decision::Retry(cap) => {
                    tracing::warn!(key, request = what, %cause, round, "retrying");
                    tokio::time::sleep(jitter(cap)).await;
                }
            }
        }
    }
}

/// Full jitter: a wait between a quarter of `cap` and `cap`, so that pods throttled together do
/// not come back together.
pub fn jitter(cap: Duration) -> Duration {
    rand::rng().random_range(cap / 4..=cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn cause(retryable: bool) -> S3Cause {
        S3Cause {
            code: Some(
                if retryable {
                    "SlowDown"
                } else {
                    "AccessDenied"
                }
                .into(),
            ),
            status: Some(if retryable { 503 } else { 403 }),
            message: String::new(),
            retryable,
        }
    }

    #[test]
    fn only_retryable_causes_get_rounds_and_waits_grow_to_a_cap() {
        let policy = RetryPolicy::new(3);
        assert_eq!(policy.decide(&cause(false), 1, false), Decision::GiveUp);
        assert_eq!(
            policy.decide(&cause(true), 1, false),
            Decision::Retry(Duration::from_millis(500))
        );
        assert_eq!(
            policy.decide(&cause(true), 3, false),
            Decision::Retry(Duration::from_secs(2))
        );
        assert_eq!(policy.decide(&cause(true), 4, false), Decision::GiveUp);
        assert_eq!(policy.decide(&cause(true), 1, true), Decision::GiveUp);
        let long = RetryPolicy::new(20);
        assert_eq!(
            long.decide(&cause(true), 12, false),
            Decision::Retry(Duration::from_secs(20))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_until_success_and_returns_permanent_causes_at_once() {
        let policy = RetryPolicy::new(3);
        let calls = AtomicU32::new(0);
        let ok = policy
            .run("PutObject", "k", || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(cause(true)),
                    _ => Ok(7),
                }
            })
            .await;
        assert_eq!(ok.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let denied: Result<(), _> = policy
            .run("PutObject", "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(cause(false))
            })
            .await;
        assert!(!denied.unwrap_err().retryable);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no second try");

        calls.store(0, Ordering::SeqCst);
        let storm: Result<(), _> = policy
            .run("UploadPart", "k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(cause(true))
            })
            .await;
        assert!(storm.unwrap_err().retryable);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "the first try and three rounds"
        );
    }
}
