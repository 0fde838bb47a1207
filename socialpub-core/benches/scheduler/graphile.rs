//! The graphile-worker comparison.

use std::process::Command;

use super::stores::pg_url;

/// graphile-worker 0.18 (Node) against the same server, default and batched settings.
pub(super) fn graphile(n: usize) {
    let Some(url) = pg_url() else {
        println!("graphile-worker: no PostgreSQL URL");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/graphile");
    if !dir.join("node_modules").exists() {
        println!(
            "graphile-worker: run `npm install` in {} first",
            dir.display()
        );
        return;
    }
    for mode in ["default", "batched"] {
        let out = Command::new("node")
            .current_dir(&dir)
            .args(["gw.mjs", &url, &n.to_string(), mode])
            .output()
            .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            Some(v) => println!(
                "| drain | graphile-worker 0.18.0 ({mode}, concurrency 10) | {n} | {}/s | {} s | bulk insert {}/s | machine {} | autovacuums of its jobs table during the drain: {} |",
                v["drain_per_s"],
                v["drain_s"],
                v["enqueue_per_s"],
                v["machine_cpu_us_per_job"]
                    .as_f64()
                    .map_or("CPU not measured".to_owned(), |c| format!(
                        "{c:.1} µs CPU each"
                    )),
                v["jobs_autovacuums"]
                    .as_i64()
                    .map_or("not counted".to_owned(), |c| c.to_string())
            ),
            None => println!(
                "graphile-worker {mode} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}
