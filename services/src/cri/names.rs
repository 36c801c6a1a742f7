//! Name reservations: a pod's or container's name (the kubelet's
//! `name_namespace_uid_attempt`) belongs to one id at a time.
//!
//! A name taken by a create still in progress is waited for rather than
//! refused: the kubelet retries a create it timed out on, and the first
//! one, abandoned, releases the name when it is done (see
//! [`Abandoned`]), so the retry gets it instead of a stuck "name is
//! reserved".

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hull_proto::errdefs::Kind;
use tokio::sync::Notify;
use tonic::Status;

use super::status_of;

/// How long a create waits for a name another create in progress holds.
const WAIT_FOR_CREATE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<String, String>,
    /// Ids whose create has not finished.
    creating: HashSet<String>,
}

/// The reserved names.
#[derive(Debug, Default)]
pub struct Names {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Names {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `name` for `id` whose create is starting. A name held by
    /// another create in progress is waited for.
    ///
    /// # Errors
    /// AlreadyExists when another id holds the name.
    pub async fn reserve(&self, name: &str, id: &str) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_CREATE;
        loop {
            let changed = self.changed.notified();
            {
                let mut inner = self.lock();
                match inner.by_name.get(name) {
                    None => {
                        inner.by_name.insert(name.to_owned(), id.to_owned());
                        inner.creating.insert(id.to_owned());
                        return Ok(());
                    }
                    Some(holder) if !inner.creating.contains(holder) => {
                        return Err(status_of(
                            Kind::AlreadyExists,
                            format!("name {name:?} is reserved for {holder:?}"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let holder = self.lock().by_name.get(name).cloned().unwrap_or_default();
                return Err(status_of(
                    Kind::AlreadyExists,
                    format!("name {name:?} is reserved for {holder:?}, still being created"),
                ));
            }
        }
    }

    /// Records a name as held by a finished record (at create's success, or
    /// when records are loaded at startup).
    pub fn hold(&self, name: &str, id: &str) {
        let mut inner = self.lock();
        inner.by_name.insert(name.to_owned(), id.to_owned());
        inner.creating.remove(id);
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Releases `name` if `id` holds it.
    pub fn release(&self, name: &str, id: &str) {
        let mut inner = self.lock();
        if inner.by_name.get(name).is_some_and(|h| h == id) {
            inner.by_name.remove(name);
        }
        inner.creating.remove(id);
        drop(inner);
        self.changed.notify_waiters();
    }
}

/// Set when the client of a create went away (its deadline passed) before
/// the create finished; the create then undoes itself.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    /// Whether the client is gone.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A guard that sets the flag if dropped before [`Armed::disarm`].
    pub fn arm(&self) -> Armed {
        Armed(Some(self.clone()))
    }
}

/// See [`Abandoned::arm`].
#[derive(Debug)]
pub struct Armed(Option<Abandoned>);

impl Armed {
    /// The client got its answer.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.0.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_held_by_a_create_in_progress_waits_for_it() {
        let names = Arc::new(Names::default());
        names.reserve("pod_ns_uid_0", "a").await.unwrap();
        let waiter = {
            let names = names.clone();
            tokio::spawn(async move { names.reserve("pod_ns_uid_0", "b").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // The first create was abandoned and undid itself.
        names.release("pod_ns_uid_0", "a");
        waiter.await.unwrap().unwrap();
        names.hold("pod_ns_uid_0", "b");
        let e = names.reserve("pod_ns_uid_0", "c").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        assert!(
            e.message().contains("reserved for \"b\""),
            "{}",
            e.message()
        );
        // Releasing by the wrong id changes nothing.
        names.release("pod_ns_uid_0", "c");
        assert!(names.reserve("pod_ns_uid_0", "d").await.is_err());
    }

    #[test]
    fn a_dropped_guard_marks_the_create_abandoned() {
        let a = Abandoned::default();
        a.arm().disarm();
        assert!(!a.is_set());
        drop(a.arm());
        assert!(a.is_set());
    }
}
