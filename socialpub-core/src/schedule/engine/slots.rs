//! The account slots this engine holds in the store.
//!
//! A publish needs its account's slot ([`ScheduleStore::acquire_account_slot`]) so that at most
//! one publish per account is in flight across every engine sharing the store. Taking and
//! giving it up for each publish cost two more durable writes per delivery, which halved a
//! PostgreSQL drain: so the engine keeps a slot it took (a *tenure*) while more publishes to the
//! account follow, renews it with the lease, and gives it up once the account has been quiet
//! here for a moment ([`LINGER`] by default). Publishes in this engine are already one per account (its account
//! lock), so the tenure only keeps other engines out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::lease::LeaseWatch;
use super::std_to_chrono;
use crate::auth::AccountKey;
use crate::clock::Clock;
use crate::error::Result;
use crate::schedule::store::ScheduleStore;

/// How long (real time) a slot is kept by default after its last publish here before it is
/// given up. Long enough to carry a backlog's publishes to one account over the gaps between
/// them, short next to the second another engine's delivery waits when it finds the account
/// busy.
pub(super) const LINGER: Duration = Duration::from_millis(500);

/// The slots this engine holds, by account.
pub(super) struct AccountSlots {
    store: Arc<dyn ScheduleStore>,
    clock: Arc<dyn Clock>,
    lease: Duration,
    linger: Duration,
    held: Mutex<HashMap<AccountKey, Arc<Tenure>>>,
}

/// One holding of an account's slot, under an id of its own: a late release of an old tenure
/// can never give up a newer one.
struct Tenure {
    holder: Uuid,
    /// Publishes using it now.
    users: AtomicUsize,
    /// When the last publish stopped using it.
    last_used: Mutex<Instant>,
    /// Set, under the map's lock, once the tenure is being given up: no publish may start on it.
    closed: AtomicBool,
    /// Fired when the store said another holder has the slot now.
    lost: LeaseWatch,
    /// Fired once the tenure is out of the map and, when given up, out of the store.
    gone: LeaseWatch,
}

/// A publish's use of its account's slot; dropping it ends the use.
pub(super) struct SlotUse {
    tenure: Arc<Tenure>,
}

impl SlotUse {
    /// Completes if the slot is lost while in use (it expired and another engine took it).
    pub(super) async fn lost(&self) {
        self.tenure.lost.lost().await;
    }
}

impl Drop for SlotUse {
    fn drop(&mut self) {
        *self
            .tenure
            .last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.tenure.users.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AccountSlots {
    pub(super) fn new(
        store: Arc<dyn ScheduleStore>,
        clock: Arc<dyn Clock>,
        lease: Duration,
        linger: Duration,
    ) -> Self {
        Self {
            store,
            clock,
            lease,
            linger,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<AccountKey, Arc<Tenure>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account's slot for one publish: the tenure this engine holds, or a new one taken in
    /// the store. `None` when another engine holds it.
    pub(super) async fn take(self: &Arc<Self>, key: &AccountKey) -> Result<Option<SlotUse>> {
        loop {
            let closing = {
                let map = self.map();
                match map.get(key) {
                    Some(t) if !t.closed.load(Ordering::SeqCst) && !t.lost.is_lost() => {
                        t.users.fetch_add(1, Ordering::SeqCst);
                        return Ok(Some(SlotUse { tenure: t.clone() }));
                    }
                    Some(t) => Some(t.clone()),
                    None => None,
                }
            };
            match closing {
                // Being given up: wait until the store forgot it, then take it anew.
                Some(t) => t.gone.lost().await,
                None => break,
            }
        }
        let now = self.clock.now();
        let holder = Uuid::now_v7();
        if !self
            .store
            .acquire_account_slot(key, holder, now, now + std_to_chrono(self.lease))
            .await?
        {
            return Ok(None);
        }
        let tenure = Arc::new(Tenure {
            holder,
            users: AtomicUsize::new(1),
            last_used: Mutex::new(Instant::now()),
            closed: AtomicBool::new(false),
            lost: LeaseWatch::default(),
            gone: LeaseWatch::default(),
        });
        // Publishes to one account are one at a time in this engine (its account lock), so no
        // other tenure for `key` came in meanwhile.
        self.map().insert(key.clone(), tenure.clone());
        tokio::spawn(self.clone().keep(key.clone(), tenure.clone()));
        Ok(Some(SlotUse { tenure }))
    }

    /// Renews the tenure every third of the lease and gives it up once it has been unused for
    /// the linger time.
    async fn keep(self: Arc<Self>, key: AccountKey, t: Arc<Tenure>) {
        let renew = crate::clock::sleep(&*self.clock, self.lease / 3);
        tokio::pin!(renew);
        loop {
            tokio::select! {
                () = &mut renew => {
                    if t.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    let until = self.clock.now() + std_to_chrono(self.lease);
                    match self.store.renew_account_slot(&key, t.holder, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(account = %key, "the account's publish slot was lost");
                            t.lost.lose();
                            self.forget(&key, &t);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(account = %key, error = %e, "renewing the account's publish slot failed");
                        }
                    }
                    renew.set(crate::clock::sleep(&*self.clock, self.lease / 3));
                }
                // A zero linger still looks only every few milliseconds while the slot is used.
                () = tokio::time::sleep(self.linger.max(Duration::from_millis(20))) => {
                    if self.close_if_idle(&t) {
                        self.give_up(&key, &t).await;
                        return;
                    }
                    if t.closed.load(Ordering::SeqCst) {
                        // Given up by `release_idle`.
                        return;
                    }
                }
            }
        }
    }

    /// Marks the tenure closed if nothing used it for the linger time; decided under the map's
    /// lock, which [`AccountSlots::take`] holds to start a use.
    fn close_if_idle(&self, t: &Tenure) -> bool {
        let _map = self.map();
        let idle = *t.last_used.lock().unwrap_or_else(|p| p.into_inner());
        t.users.load(Ordering::SeqCst) == 0
            && idle.elapsed() >= self.linger
            && !t.closed.swap(true, Ordering::SeqCst)
    }

    async fn give_up(&self, key: &AccountKey, t: &Arc<Tenure>) {
        if let Err(e) = self.store.release_account_slot(key, t.holder).await {
            tracing::warn!(account = %key, error = %e, "could not give up the account's publish slot; it expires with the lease");
        }
        self.forget(key, t);
    }

    fn forget(&self, key: &AccountKey, t: &Arc<Tenure>) {
        t.closed.store(true, Ordering::SeqCst);
        {
            let mut map = self.map();
            if map.get(key).is_some_and(|held| Arc::ptr_eq(held, t)) {
                map.remove(key);
            }
        }
        t.gone.lose();
    }

    /// Gives up every slot no publish uses (at shutdown, so other engines need not wait for
    /// the linger time).
    pub(super) async fn release_idle(&self) {
        let idle: Vec<(AccountKey, Arc<Tenure>)> = {
            let map = self.map();
            map.iter()
                .filter(|(_, t)| {
                    t.users.load(Ordering::SeqCst) == 0 && !t.closed.swap(true, Ordering::SeqCst)
                })
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect()
        };
        for (key, t) in idle {
            self.give_up(&key, &t).await;
        }
    }
}
