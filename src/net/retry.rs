//! Owns: WHEN and HOW LONG to wait before retrying one registry operation.
//! Exponential backoff with jitter for transient failures (5xx, resets,
//! timeouts), `Retry-After` honoured for 429, and a budget SHARED by every
//! worker talking to one registry: a 429 pauses the whole registry (not just
//! the request that got it), the pause grows while 429s keep coming and
//! resets after a success, and a registry-wide cap on retries stops a run
//! from hammering a broken server forever. A refused connection (nothing
//! listens) is not a loaded server: a few quick tries, counted per
//! registry, then every operation on it gives up at once.
//!
//! Must not: know about HTTP, registries or images. Errors are classified
//! by the caller through [`Classify`]; the only I/O is the sleep in
//! [`retry`].
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What kind of failure an operation had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Retrying cannot help (401, 404, bad digest, local I/O, ...).
    Permanent,
    /// 5xx, a reset connection, a timeout: retry after a backoff.
    Transient,
    /// 429: retry after `retry_after` if the server said, else after the
    /// registry-wide backoff.
    RateLimited { retry_after: Option<Duration> },
    /// Nothing accepts connections (connection refused): retried only a
    /// few times, quickly, in case the server is just restarting.
    Refused,
}

/// Implemented by the error types operations return.
pub trait Classify {
    fn failure(&self) -> Failure;
}

/// How retries are spaced and capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry (doubles each time).
    pub base: Duration,
    /// Longest backoff we choose ourselves.
    pub max_delay: Duration,
    /// Longest `Retry-After` we accept; a longer one fails the operation
    /// (re-run later: the run is resumable).
    pub max_retry_after: Duration,
    /// Retries allowed per registry over the whole run.
    pub registry_budget: u32,
    /// Failures in a row, over every worker, after which the registry is
    /// taken as down: later operations fail at once instead of each
    /// spending its own attempts (a re-run resumes).
    pub down_after: u32,
    /// Refused connections in a row (over every worker) after which the
    /// registry is taken as not running.
    pub refused_attempts: u32,
    /// Backoff before the first retry of a refused connection (doubles).
    pub refused_base: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 8,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
            registry_budget: 1000,
            down_after: 32,
            refused_attempts: 3,
            refused_base: Duration::from_millis(250),
        }
    }
}

impl Policy {
    /// Backoff before retry number `attempt` (1 = first retry): `base *
    /// 2^(attempt-1)`, capped, scaled by `jitter` in [0, 1) into the upper
    /// half of the interval ("equal jitter": never less than half the
    /// backoff, so retries stay spaced, yet workers do not retry in step).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max_delay);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long (the registry-wide pause included), then try again.
    Retry(Duration),
    /// Stop: why.
    GiveUp(GiveUp),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    Permanent,
    AttemptsExhausted,
    BudgetExhausted,
    RetryAfterTooLong(Duration),
    RegistryDown,
    /// The registry refused `times` connections in a row (the policy's
    /// `refused_attempts`): taken as not running until a success.
    Refused {
        times: u32,
    },
}

#[derive(Debug)]
struct State {
    retries_left: u32,
    retries: u64,
    paused_until: Option<Instant>,
    /// 429s without Retry-After since the last success.
    rate_streak: u32,
    /// Failures since the last success (any worker).
    failures_in_row: u32,
    /// Refused connections since the last success (any worker).
    refused_in_row: u32,
}

/// The retry state shared by every worker of one registry.
#[derive(Debug)]
pub struct Budget {
    policy: Policy,
    state: Mutex<State>,
}

impl Budget {
    pub fn new(policy: Policy) -> Budget {
        Budget {
            state: Mutex::new(State {
                retries_left: policy.registry_budget,
                retries: 0,
                paused_until: None,
                rate_streak: 0,
                failures_in_row: 0,
                refused_in_row: 0,
            }),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Retries granted so far (for the report).
    pub fn retries(&self) -> u64 {
        self.lock().retries
    }

    /// How long to wait at `now` before sending anything to this registry
    /// (a 429 paused it).
    pub fn pause_left(&self, now: Instant) -> Duration {
        self.lock()
            .paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// A success: the rate-limit backoff starts over.
    pub fn on_success(&self) {
        let mut state = self.lock();
        state.rate_streak = 0;
        state.failures_in_row = 0;
        state.refused_in_row = 0;
    }

    /// Decides after the `attempt`-th try (1-based) failed with `failure`
    /// at `now`; `jitter` in [0, 1). Pure apart from the shared state.
    pub fn on_failure(
        &self,
        failure: Failure,
        attempt: u32,
        now: Instant,
        jitter: f64,
    ) -> Decision {
        let policy = self.policy;
        // A permanent failure is not a sign of a failing registry: it
        // leaves the shared state alone.
        let rate_limited = match failure {
            Failure::Permanent => return Decision::GiveUp(GiveUp::Permanent),
            Failure::Refused => return self.on_refused(attempt, jitter),
            Failure::Transient => None,
            Failure::RateLimited { retry_after } => Some(retry_after),
        };
        let mut state = self.lock();
        state.failures_in_row += 1;
        if state.failures_in_row > policy.down_after {
            return Decision::GiveUp(GiveUp::RegistryDown);
        }
        let delay = match rate_limited {
            None => policy.backoff(attempt, jitter),
            Some(Some(after)) => {
                if after > policy.max_retry_after {
                    return Decision::GiveUp(GiveUp::RetryAfterTooLong(after));
                }
                after
            }
            Some(None) => {
                state.rate_streak += 1;
                policy.backoff(state.rate_streak, jitter)
            }
        };
        if attempt >= policy.max_attempts {
            return Decision::GiveUp(GiveUp::AttemptsExhausted);
        }
        if state.retries_left == 0 {
            return Decision::GiveUp(GiveUp::BudgetExhausted);
        }
        state.retries_left -= 1;
        state.retries += 1;
        let resume = now + delay;
        if matches!(failure, Failure::RateLimited { .. }) {
            // Everyone waits, not only this request.
            state.paused_until = Some(state.paused_until.map_or(resume, |u| u.max(resume)));
        }
        let pause = state
            .paused_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        Decision::Retry(delay.max(pause))
    }
}

impl Budget {
    /// A refused connection: quick retries until the registry has refused
    /// `refused_attempts` in a row, then give up (this operation and every
    /// later one, until a success).
    fn on_refused(&self, attempt: u32, jitter: f64) -> Decision {
        let policy = self.policy;
        let mut state = self.lock();
        state.refused_in_row += 1;
        let down_at = policy.refused_attempts.max(1);
        if state.refused_in_row >= down_at {
            // Said as the refusals in a row that made it "not running".
            return Decision::GiveUp(GiveUp::Refused { times: down_at });
        }
        state.retries += 1;
        let quick = Policy {
            base: policy.refused_base,
            ..policy
        };
        Decision::Retry(quick.backoff(attempt, jitter))
    }
}

/// An operation that failed for good, with what the retry engine decided.
#[derive(Debug)]
pub struct Exhausted<E> {
    pub error: E,
    pub attempts: u32,
    pub reason: GiveUp,
}

impl<E: std::fmt::Display> std::fmt::Display for Exhausted<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            GiveUp::Permanent => write!(f, "{}", self.error),
            GiveUp::AttemptsExhausted => write!(
                f,
                "{} (gave up after {} attempts; re-run to resume)",
                self.error, self.attempts
            ),
            GiveUp::BudgetExhausted => write!(
                f,
                "{} (the registry's retry budget for this run is spent; re-run later to resume)",
                self.error
            ),
            GiveUp::RegistryDown => write!(
                f,
                "{} (the registry failed every request for a while: taken as down; re-run to resume)",
                self.error
            ),
            // The error says what refused ("... HOST refused the connection").
            GiveUp::Refused { times } => write!(
                f,
                "{} {times} times: is the registry running? (start it, or fix the address; re-run to resume)",
                self.error
            ),
            GiveUp::RetryAfterTooLong(d) => write!(
                f,
                "{} (the registry asks to wait {}s; re-run later to resume)",
                self.error,
                d.as_secs()
            ),
        }
    }
}

/// Runs `op` until it succeeds or the budget says stop, sleeping between
/// attempts (and first while the registry is paused by a 429).
pub fn retry<T, E: Classify>(
    budget: &Budget,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, Exhausted<E>> {
    let mut attempt = 1;
    loop {
        std::thread::sleep(budget.pause_left(Instant::now()));
        match op() {
            Ok(value) => return Ok(succeeded(budget, value)),
            Err(error) => std::thread::sleep(next_delay(budget, error, attempt)?),
        }
        attempt += 1;
    }
}

/// `retry` for async operations (the lookaside's GETs run on the shared
/// runtime): the same decisions, awaiting instead of blocking the thread.
pub async fn retry_async<T, E: Classify, F: std::future::Future<Output = Result<T, E>>>(
    budget: &Budget,
    mut op: impl FnMut() -> F,
) -> Result<T, Exhausted<E>> {
    let mut attempt = 1;
    loop {
        tokio::time::sleep(budget.pause_left(Instant::now())).await;
        match op().await {
            Ok(value) => return Ok(succeeded(budget, value)),
            Err(error) => tokio::time::sleep(next_delay(budget, error, attempt)?).await,
        }
        attempt += 1;
    }
}

/// Records a success (the registry-wide pause and failure streak reset).
fn succeeded<T>(budget: &Budget, value: T) -> T {
    budget.on_success();
    value
}

/// The budget's decision on attempt `attempt`'s failure: how long to wait
/// before the next attempt, or the error given up on.
fn next_delay<E: Classify>(
    budget: &Budget,
    error: E,
    attempt: u32,
) -> Result<Duration, Exhausted<E>> {
    match budget.on_failure(error.failure(), attempt, Instant::now(), fastrand::f64()) {
        Decision::Retry(delay) => Ok(delay),
        Decision::GiveUp(reason) => Err(Exhausted {
            error,
            attempts: attempt,
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_attempts: 4,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(60),
            registry_budget: 5,
            down_after: 100,
            refused_attempts: 3,
            refused_base: Duration::from_millis(1),
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_into_the_upper_half() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(300));
        assert_eq!(p.backoff(10, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(100, 1.0), Duration::from_millis(1000));
    }

    #[test]
    fn permanent_failures_are_not_retried_and_attempts_are_capped() {
        let b = Budget::new(policy());
        let now = Instant::now();
        assert_eq!(
            b.on_failure(Failure::Permanent, 1, now, 0.0),
            Decision::GiveUp(GiveUp::Permanent)
        );
        assert!(matches!(
            b.on_failure(Failure::Transient, 3, now, 0.0),
            Decision::Retry(_)
        ));
        assert_eq!(
            b.on_failure(Failure::Transient, 4, now, 0.0),
            Decision::GiveUp(GiveUp::AttemptsExhausted)
        );
        assert_eq!(b.retries(), 1);
    }

    #[test]
    fn retry_after_is_honoured_and_pauses_the_whole_registry() {
        let b = Budget::new(policy());
        let now = Instant::now();
        let after = Duration::from_secs(3);
        assert_eq!(
            b.on_failure(
                Failure::RateLimited {
                    retry_after: Some(after)
                },
                1,
                now,
                0.9
            ),
            Decision::Retry(after)
        );
        assert_eq!(b.pause_left(now), after);
        // Another worker's transient failure waits for the pause too.
        assert_eq!(
            b.on_failure(Failure::Transient, 1, now, 0.0),
            Decision::Retry(after)
        );
        assert_eq!(
            b.on_failure(
                Failure::RateLimited {
                    retry_after: Some(Duration::from_secs(3600))
                },
                1,
                now,
                0.0
            ),
            Decision::GiveUp(GiveUp::RetryAfterTooLong(Duration::from_secs(3600)))
        );
    }

    #[test]
    fn rate_limits_without_retry_after_back_off_on_a_shared_streak() {
        let b = Budget::new(policy());
        let now = Instant::now();
        let limited = Failure::RateLimited { retry_after: None };
        // Three workers each get their first 429: the pause grows anyway.
        let d1 = b.on_failure(limited, 1, now, 1.0);
        let d2 = b.on_failure(limited, 1, now, 1.0);
        let d3 = b.on_failure(limited, 1, now, 1.0);
        assert_eq!(d1, Decision::Retry(Duration::from_millis(100)));
        assert_eq!(d2, Decision::Retry(Duration::from_millis(200)));
        assert_eq!(d3, Decision::Retry(Duration::from_millis(400)));
        b.on_success();
        assert_eq!(
            b.on_failure(limited, 1, now + Duration::from_secs(1), 1.0),
            Decision::Retry(Duration::from_millis(100))
        );
    }

    #[test]
    fn the_registry_budget_is_shared_and_finite() {
        let b = Budget::new(policy());
        let now = Instant::now();
        for _ in 0..5 {
            assert!(matches!(
                b.on_failure(Failure::Transient, 1, now, 0.0),
                Decision::Retry(_)
            ));
        }
        assert_eq!(
            b.on_failure(Failure::Transient, 1, now, 0.0),
            Decision::GiveUp(GiveUp::BudgetExhausted)
        );
        assert_eq!(b.retries(), 5);
    }

    #[derive(Debug)]
    struct E(Failure);

    #[test]
    fn a_registry_failing_everything_is_taken_as_down_until_a_success() {
        let b = Budget::new(Policy {
            down_after: 3,
            registry_budget: 100,
            ..policy()
        });
        let now = Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                b.on_failure(Failure::Transient, 1, now, 0.0),
                Decision::Retry(_)
            ));
        }
        assert_eq!(
            b.on_failure(Failure::Transient, 1, now, 0.0),
            Decision::GiveUp(GiveUp::RegistryDown)
        );
        b.on_success();
        assert!(matches!(
            b.on_failure(Failure::Transient, 1, now, 0.0),
            Decision::Retry(_)
        ));
    }
    impl Classify for E {
        fn failure(&self) -> Failure {
            self.0
        }
    }

    #[test]
    fn refused_connections_give_up_after_a_few_quick_tries_per_registry() {
        let b = Budget::new(policy());
        let mut calls = 0;
        let err = retry(&b, || {
            calls += 1;
            Err::<(), _>(E(Failure::Refused))
        })
        .unwrap_err();
        assert_eq!(calls, 3);
        assert_eq!(
            (err.attempts, err.reason),
            (3, GiveUp::Refused { times: 3 })
        );
        // The registry is taken as not running: the next operation does
        // not spend three tries of its own...
        let err = retry(&b, || Err::<(), _>(E(Failure::Refused))).unwrap_err();
        assert_eq!(
            (err.attempts, err.reason),
            (1, GiveUp::Refused { times: 3 })
        );
        // ...until a success.
        b.on_success();
        let now = Instant::now();
        assert!(matches!(
            b.on_failure(Failure::Refused, 1, now, 0.0),
            Decision::Retry(d) if d <= Duration::from_millis(1)
        ));
    }

    #[test]
    fn retry_runs_until_success_and_counts() {
        let b = Budget::new(Policy {
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..policy()
        });
        let mut calls = 0;
        let got = retry(&b, || {
            calls += 1;
            if calls < 3 {
                Err(E(Failure::Transient))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.unwrap(), 3);
        assert_eq!(b.retries(), 2);
        let err = retry(&b, || Err::<(), _>(E(Failure::Permanent))).unwrap_err();
        assert_eq!((err.attempts, err.reason), (1, GiveUp::Permanent));
    }

    #[test]
    fn retry_async_decides_as_retry_does() {
        let b = Budget::new(Policy {
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..policy()
        });
        let calls = std::cell::Cell::new(0);
        let got = crate::net::block_on(retry_async(&b, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(E(Failure::Transient))
                } else {
                    Ok(n)
                }
            }
        }));
        assert_eq!(got.unwrap(), 3);
        let err = crate::net::block_on(retry_async(&b, || async {
            Err::<(), _>(E(Failure::Permanent))
        }))
        .unwrap_err();
        assert_eq!((err.attempts, err.reason), (1, GiveUp::Permanent));
    }
}
