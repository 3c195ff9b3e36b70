//! Background renewal: the tokens of active sessions (their own, and those exchanged for
//! services) and Sallyport's shared tokens are renewed shortly before they expire, without
//! waiting for a request, so that the first call after a quiet minute pays no refresh.
//!
//! One timer structure for all of them (a queue ordered by due time, looked at every second),
//! not a task or timer per session. A session is (re)scheduled when a request or a login shows
//! it to this instance and its due time moved; a session that went idle drops out when its
//! turn comes (loading it finds it ended). The work is bounded: at most [`MAX_JOBS`] renewals
//! at once, at most [`MAX_PER_PROVIDER`] toward any one provider, and every renewal is the
//! same single flight as on the request path, so across instances each token is renewed once.
//! Failures are retried with backoff; only an explicit refusal (`invalid_grant`) ends a
//! session.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Broker, TokenFailure};
use crate::config::TokenKind;
use crate::oidc::Provider;
use crate::session::manager::{Loaded, Sessions};
use crate::session::{SessionRecord, StoreKey};

/// The most renewals running at once.
const MAX_JOBS: usize = 64;
/// The most renewals running at once toward one provider.
pub const MAX_PER_PROVIDER: usize = 4;
/// The most sessions scheduled; beyond it new ones are renewed on their next request.
const MAX_SCHEDULED: usize = 200_000;
/// The shortest wait before a job runs again (tokens that live shorter than `refresh_before`
/// would otherwise be renewed in a loop).
const MIN_GAP: u64 = 10;
/// The first wait after a failed renewal; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: u64 = 5;
/// The longest wait between attempts.
const MAX_BACKOFF: u64 = 120;

/// What to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Job {
    /// A session's tokens.
    Session(StoreKey),
    /// A shared token, by the index of a service that uses it.
    Shared(usize),
}

/// The queue: when each job is due (unix seconds), and how often it failed in a row.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    inner: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    due: HashMap<Job, (u64, u32)>,
    order: BTreeSet<(u64, Job)>,
}

impl Schedule {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Schedules `job` at `at` (unix seconds), moving it if it was scheduled at another time.
    /// Cheap when nothing changes: one lookup.
    pub(super) fn at(&self, job: Job, at: u64) {
        let mut q = self.lock();
        match q.due.get(&job).copied() {
            Some((when, _)) if when == at => return,
            Some((when, _)) => {
                q.order.remove(&(when, job));
            }
            None if q.due.len() >= MAX_SCHEDULED => return,
            None => {}
        }
        q.due.insert(job, (at, 0));
        q.order.insert((at, job));
    }

    /// Schedules `job` again after its `failures`-th failure in a row, with backoff.
    fn retry(&self, job: Job, failures: u32, now: u64) {
        let mut q = self.lock();
        if let Some((when, _)) = q.due.remove(&job) {
            q.order.remove(&(when, job));
        }
        let wait = (FIRST_BACKOFF << failures.clamp(1, 8).saturating_sub(1)).min(MAX_BACKOFF);
        q.due.insert(job, (now + wait, failures));
        q.order.insert((now + wait, job));
    }

    /// Removes and returns the jobs due at `now`, at most `max`.
    fn take_due(&self, now: u64, max: usize) -> Vec<(Job, u32)> {
        let mut q = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(when, job)) = q.order.first() else {
                break;
            };
            if when > now {
                break;
            }
            q.order.pop_first();
            let failures = q.due.remove(&job).map_or(0, |(_, f)| f);
            out.push((job, failures));
        }
        out
    }

    /// How many jobs are scheduled.
    pub(super) fn len(&self) -> usize {
        self.lock().due.len()
    }
}

impl Broker {
    /// Schedules the background renewal of `session`'s tokens (when background refresh is
    /// on): shortly before the first of them is due.
    pub fn watch(&self, key: StoreKey, record: &SessionRecord, now: u64) {
        if !self.background {
            return;
        }
        if let Some(due) = self.next_due(record) {
            self.schedule.at(Job::Session(key), due.max(now));
        }
    }

    /// When the first token of `record` that a renewal can renew becomes due.
    fn next_due(&self, record: &SessionRecord) -> Option<u64> {
        let before = self.refresh_before.as_secs();
        let own = record
            .access_expires_at
            .filter(|_| record.refresh_token.is_some());
        let exchanged = self
            .plans
            .iter()
            .filter(|p| p.spec.kind == TokenKind::Exchange)
            .filter_map(|p| {
                record
                    .service_tokens
                    .get(&p.name)
                    .filter(|t| t.spec == p.digest)
            })
            .map(|t| t.expires_at);
        own.into_iter()
            .chain(exchanged)
            .min()
            .map(|exp| exp.saturating_sub(before))
    }

    /// Takes over the sessions `running` (the broker a reload replaces) has scheduled, so
    /// that idle sessions stay renewed. Shared tokens are scheduled again at their next use:
    /// their services may have changed.
    pub fn adopt(&self, running: &Broker) {
        if !self.background {
            return;
        }
        let sessions: Vec<(Job, u64)> = running
            .schedule
            .lock()
            .due
            .iter()
            .filter(|(job, _)| matches!(job, Job::Session(_)))
            .map(|(job, (at, _))| (*job, *at))
            .collect();
        for (job, at) in sessions {
            self.schedule.at(job, at);
        }
    }

    /// How many renewals are scheduled (for tests and metrics).
    pub fn scheduled(&self) -> usize {
        self.schedule.len()
    }

    /// Renews whatever is due now, at most [`MAX_JOBS`] at once; returns when all of them
    /// finished.
    pub async fn renew_due(&self, sessions: &Sessions, providers: &[Provider]) {
        let now = sessions.clock().unix();
        let due = self.schedule.take_due(now, MAX_JOBS);
        if due.is_empty() {
            return;
        }
        let runs = due.into_iter().map(|(job, failures)| async move {
            let outcome = match job {
                Job::Session(key) => self.renew_session(sessions, providers, key).await,
                Job::Shared(service) => self.renew_shared_in_background(sessions, providers, service).await,
            };
            let now = sessions.clock().unix();
            match outcome {
                Ok(Some(next)) => self.schedule.at(job, next.max(now + MIN_GAP)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry = failures + 1, "background token renewal failed; retrying later");
                    self.schedule.retry(job, failures + 1, now);
                }
            }
        });
        futures_util::future::join_all(runs).await;
    }

    /// The permit to call `provider` in the background.
    async fn provider_permit(&self, provider: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let semaphore = {
            let mut caps = self
                .provider_caps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                caps.entry(provider.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_PROVIDER))),
            )
        };
        semaphore.acquire_owned().await.ok()
    }

    /// Renews a session's due tokens; the next due time, or `None` when the session ended.
    async fn renew_session(
        &self,
        sessions: &Sessions,
        providers: &[Provider],
        key: StoreKey,
    ) -> Result<Option<u64>, TokenFailure> {
        // A session that went idle (or ended) is found gone here and drops out.
        let Some(record) = sessions.load(&key).await? else {
            return Ok(None);
        };
        let Some(provider) = providers
            .iter()
            .find(|p| p.config().name == record.provider)
        else {
            return Ok(None);
        };
        let _permit = self.provider_permit(&record.provider).await;
        let mut session = Loaded { key, record };
        session = match self.ensure_fresh(sessions, provider, session, false).await {
            Ok(s) => s,
            Err(TokenFailure::SessionEnded) => return Ok(None),
            Err(e) => return Err(e),
        };
        let now = sessions.clock().unix();
        for (index, plan) in self.plans.iter().enumerate() {
            let held = session
                .record
                .service_tokens
                .get(&plan.name)
                .is_some_and(|t| t.spec == plan.digest);
            if plan.spec.kind != TokenKind::Exchange
                || !held
                || self.usable(plan, &session.record, now)
            {
                continue;
            }
            session = match self
                .exchanged(sessions, providers, session.clone(), index)
                .await
            {
                Ok(s) => s,
                Err(TokenFailure::SessionEnded) => return Ok(None),
                Err(TokenFailure::ExchangeDenied { .. }) => {
                    // Refused now: the next call for that service asks again (and gets its
                    // 403); renewing it here again would only repeat the refusal.
                    let name = plan.name.clone();
                    match sessions
                        .modify(&key, |r| {
                            r.service_tokens.remove(&name);
                        })
                        .await?
                    {
                        Some(record) => Loaded { key, record },
                        None => return Ok(None),
                    }
                }
                Err(e) => return Err(e),
            };
        }
        Ok(self.next_due(&session.record))
    }

    /// Renews a shared token if a request used it since it was obtained; the next due time,
    /// or `None` when unused (the next request obtains it again).
    async fn renew_shared_in_background(
        &self,
        sessions: &Sessions,
        providers: &[Provider],
        service: usize,
    ) -> Result<Option<u64>, TokenFailure> {
        let Some(entry) = self.plans[service].shared.as_ref() else {
            return Ok(None);
        };
        if !entry.take_used() {
            return Ok(None);
        }
        let _permit = self
            .provider_permit(&entry.provider(providers).config().name)
            .await;
        let token = self
            .client_credentials(sessions, providers, service)
            .await?;
        Ok(Some(
            token
                .expires_at
                .saturating_sub(self.refresh_before.as_secs()),
        ))
    }

    /// Schedules the renewal of the shared token of `service`.
    pub(super) fn watch_shared(&self, service: usize, expires_at: u64) {
        if self.background {
            self.schedule.at(
                Job::Shared(service),
                expires_at.saturating_sub(self.refresh_before.as_secs()),
            );
        }
    }
}

/// Runs background renewal for the gateway whose current state `current` gives (the one a
/// reload put in place) until it is gone or `stop` turns true; renewals in flight then get
/// `grace` to finish (a refresh cut off after the provider rotated the refresh token, but
/// before the store has the new one, would end the session).
pub async fn run<S: Send + Sync + 'static>(
    current: impl Fn() -> Option<Arc<S>> + Send + 'static,
    parts: fn(&S) -> (&Broker, &Sessions, &[Provider]),
    mut stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stopped(&mut stop) => return,
        }
        let Some(state) = current() else { return };
        let (broker, sessions, providers) = parts(&state);
        if !broker.background {
            return;
        }
        let renewing = broker.renew_due(sessions, providers);
        tokio::pin!(renewing);
        tokio::select! {
            () = &mut renewing => {}
            () = stopped(&mut stop) => {
                if tokio::time::timeout(grace, renewing).await.is_err() {
                    tracing::warn!("background token renewals still running at the end of the grace period; abandoned");
                }
                return;
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with one provider and no services.
    fn config() -> crate::config::Config {
        let yaml = "server: { listen: 127.0.0.1:8080, public_url: https://app.example.com }\n\
            providers: { main: { issuer: https://id.example.com, client_id: app, client_secret: s } }\n\
            session: { keys: [\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"] }\n";
        crate::config::Config::parse(
            yaml,
            std::path::Path::new("/"),
            &HashMap::<String, String>::new(),
        )
        .unwrap()
    }

    fn key(n: u8) -> Job {
        Job::Session(StoreKey::from_bytes([n; 32]))
    }

    #[test]
    fn jobs_come_due_in_order_once_and_move_when_rescheduled() {
        let s = Schedule::default();
        s.at(key(1), 100);
        s.at(key(2), 50);
        s.at(key(3), 200);
        s.at(key(1), 150); // moved, not duplicated
        s.at(Job::Shared(0), 120);
        assert_eq!(s.len(), 4);
        assert!(s.take_due(49, 10).is_empty());
        let due: Vec<Job> = s.take_due(150, 10).into_iter().map(|(j, _)| j).collect();
        assert_eq!(due, [key(2), Job::Shared(0), key(1)]);
        assert!(s.take_due(150, 10).is_empty(), "taken jobs are gone");
        assert_eq!(s.len(), 1);
        assert_eq!(s.take_due(1_000, 10).len(), 1);
    }

    #[test]
    fn failures_back_off_and_the_count_survives_until_a_success() {
        let s = Schedule::default();
        s.at(key(1), 10);
        let (job, failures) = s.take_due(10, 10)[0];
        assert_eq!(failures, 0);
        let mut at = 10;
        let mut waits = Vec::new();
        for expected in 1..=7 {
            s.retry(job, expected, at);
            let next = s.lock().order.first().map(|(when, _)| *when).unwrap();
            waits.push(next - at);
            let (_, failures) = s.take_due(next, 10)[0];
            assert_eq!(failures, expected);
            at = next;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 120, 120]);
        s.at(job, at + 60);
        let (_, failures) = s.take_due(at + 60, 10)[0];
        assert_eq!(failures, 0, "a success resets the count");
    }

    #[test]
    fn a_reloaded_broker_takes_over_the_sessions_scheduled_but_not_the_shared_tokens() {
        let config = config();
        let running = Broker::new(&config);
        running.schedule.at(key(1), 100);
        running.schedule.at(key(2), 300);
        // Service indexes may mean other services after a reload.
        running.schedule.at(Job::Shared(0), 120);
        let next = Broker::new(&config);
        next.adopt(&running);
        assert_eq!(next.scheduled(), 2);
        let due: Vec<Job> = next
            .schedule
            .take_due(300, 10)
            .into_iter()
            .map(|(j, _)| j)
            .collect();
        assert_eq!(due, [key(1), key(2)], "at the times they had");
    }

    #[tokio::test]
    async fn background_renewals_toward_one_provider_are_capped() {
        let config = config();
        let broker = Broker::new(&config);
        let mut held = Vec::new();
        for _ in 0..MAX_PER_PROVIDER {
            held.push(broker.provider_permit("main").await.unwrap());
        }
        let one_more = broker.provider_permit("main");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), one_more)
                .await
                .is_err(),
            "a fifth renewal toward the provider waits"
        );
        assert!(
            broker.provider_permit("partner").await.is_some(),
            "another provider has its own cap"
        );
        held.pop();
        assert!(
            broker.provider_permit("main").await.is_some(),
            "and goes on once one ends"
        );
    }

    #[test]
    fn the_schedule_is_bounded() {
        let s = Schedule::default();
        for i in 0..MAX_SCHEDULED + 10 {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.at(Job::Session(StoreKey::from_bytes(bytes)), 100);
        }
        assert_eq!(s.len(), MAX_SCHEDULED);
        assert_eq!(
            s.take_due(100, 5).len(),
            5,
            "at most the asked number at once"
        );
    }
}
