//! The driver: worker processes started, killed and read back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use socialpub_core::platform::Platform;
use socialpub_core::schedule::{Delivery, NewDelivery, ScheduleStore};
use socialpub_core::{Post, Target};
use uuid::Uuid;

use super::{Backend, TENANT};

pub(crate) struct Cluster {
    backend: Backend,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pub(crate) children: Vec<(String, Child)>,
    spawned: usize,
}

impl Cluster {
    pub(crate) fn new(backend: Backend, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        Cluster {
            backend,
            dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            children: Vec::new(),
            spawned: 0,
        }
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("published.log")
    }

    /// Where the workers record their commit windows.
    pub(crate) fn windows(&self) -> PathBuf {
        self.dir.path().join("windows.log")
    }

    /// Starts a worker process; returns its name.
    pub(crate) fn spawn(&mut self, extra: &[(&str, &str)]) -> String {
        self.spawned += 1;
        let name = format!("w{}", self.spawned);
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.args(["child_worker", "--exact", "--nocapture", "--test-threads=1"])
            .env("SOCIALPUB_TEST_CHILD", "worker")
            .env("SP_NAME", &name)
            .env("SP_LOG", self.log())
            .env("SP_WINDOWS", self.windows())
            .env("SP_READY", self.dir.path().join(format!("ready-{name}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        self.backend.to_env(&mut cmd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn a worker");
        self.children.push((name.clone(), child));
        name
    }

    pub(crate) fn wait_ready(&self, names: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !names
            .iter()
            .all(|n| self.dir.path().join(format!("ready-{n}")).exists())
        {
            assert!(Instant::now() < deadline, "workers did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs worker `i` and waits for it.
    pub(crate) fn kill(&mut self, i: usize) -> String {
        let (name, mut child) = self.children.remove(i);
        let _ = child.kill();
        let _ = child.wait();
        name
    }

    /// Workers that died on their own (self-kill failpoints), removed from the list.
    pub(crate) fn reap(&mut self) -> usize {
        let mut dead = 0;
        let mut i = 0;
        while i < self.children.len() {
            if matches!(self.children[i].1.try_wait(), Ok(Some(_))) {
                self.children.remove(i);
                dead += 1;
            } else {
                i += 1;
            }
        }
        dead
    }

    pub(crate) fn kill_all(&mut self) {
        while !self.children.is_empty() {
            self.kill(0);
        }
    }

    /// Creates per delivery id, from the log.
    pub(crate) fn creates(&self) -> HashMap<String, (usize, String)> {
        let mut out: HashMap<String, (usize, String)> = HashMap::new();
        for line in std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
        {
            let mut parts = line.split(' ');
            let key = parts.next().unwrap_or_default().to_owned();
            let worker = parts.next().unwrap_or_default().to_owned();
            let e = out.entry(key).or_insert((0, worker));
            e.0 += 1;
        }
        out
    }

    pub(crate) async fn wait_until_published(
        &self,
        n: i64,
        timeout: Duration,
    ) -> BTreeMap<String, i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.backend.counts().await;
            if counts.get("published").copied().unwrap_or(0) >= n || Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `n` deliveries of `TENANT`, one per post, over `accounts` accounts, due `spread` apart
/// from now in 30 steps.
pub(crate) async fn schedule(
    store: &dyn ScheduleStore,
    n: usize,
    accounts: usize,
    spread: Duration,
) -> Vec<Uuid> {
    let now = Utc::now();
    let mut ids = Vec::with_capacity(n);
    let mut batch = Vec::new();
    for i in 0..n {
        let target = Target::new(Platform::X, format!("account-{}", i % accounts));
        let post = Post::new(format!("post {i}")).with_target(target.clone());
        let step = spread / 30 * (i % 30) as u32;
        let d = Delivery::new(NewDelivery {
            post_id: Uuid::now_v7(),
            tenant: TENANT,
            target,
            post: &post,
            due_at: now + chrono::Duration::from_std(step).expect("step"),
            max_attempts: 5,
            deadline: None,
            now,
        });
        ids.push(d.id);
        batch.push(d);
        if batch.len() == 500 {
            store.insert(&batch, &[]).await.expect("insert");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.insert(&batch, &[]).await.expect("insert");
    }
    ids
}

/// Every delivery published, each created exactly once on the "platform".
pub(crate) async fn assert_exactly_once(
    cluster: &Cluster,
    store: &dyn ScheduleStore,
    ids: &[Uuid],
) {
    let creates = cluster.creates();
    let twice: Vec<_> = creates.iter().filter(|(_, (n, _))| *n > 1).collect();
    assert!(twice.is_empty(), "published twice: {twice:?}");
    let known: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    let unexpected: Vec<_> = creates.keys().filter(|k| !known.contains(*k)).collect();
    assert!(
        unexpected.is_empty(),
        "unknown posts created: {unexpected:?}"
    );
    let mut lost = Vec::new();
    for id in ids {
        let d = store
            .get(TENANT, *id)
            .await
            .expect("get")
            .expect("delivery kept");
        let created = creates.get(&id.to_string()).map_or(0, |c| c.0);
        if d.state != socialpub_core::schedule::DeliveryState::Published || created != 1 {
            lost.push((d.id, d.state, created, d.last_error.map(|e| e.message)));
        }
    }
    assert!(
        lost.is_empty(),
        "{} not published exactly once: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
