// Drain benchmark of graphile-worker, for comparison with socialpub's PostgreSQL store.
//
//   node gw.mjs <postgres-url> <n> <default|batched>
//
// Drops and recreates the `graphile_worker` schema, bulk-adds <n> no-op jobs, then runs a
// worker with concurrency 10 until the last job's completion is recorded (graphile-worker
// deletes completed jobs, so: until the jobs table is empty). `batched` adds the local queue
// (size 200) and batched completion (delays 0), graphile-worker's documented throughput
// options. Prints one JSON line.
//
// The line counts the autovacuums of graphile-worker's jobs table during the drain: its
// batched drain is several times as fast in a run where one cleans out the deleted jobs (its
// fetches cost more as they pile up), and autovacuum visits a database once a minute by
// default (`autovacuum_naptime`), so whether one falls inside a drain of a few seconds is
// chance.
import { readFileSync } from "node:fs";
import pg from "pg";
import { Logger, run, runMigrations, makeWorkerUtils } from "graphile-worker";

const [url, nArg, mode = "default"] = process.argv.slice(2);
const n = Number(nArg ?? 100000);
const concurrency = 10;
// Quiet: a log line per job would be most of the work measured.
const logger = new Logger(() => () => {});

// CPU time of every process on the machine (PostgreSQL's included), in ms: user, nice,
// system, irq, softirq and steal from /proc/stat, in ticks of 10 ms. Null elsewhere.
function machineCpuMs() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1);
    return [0, 1, 2, 5, 6, 7].reduce((sum, i) => sum + Number(f[i] ?? 0), 0) * 10;
  } catch {
    return null;
  }
}

const client = new pg.Client({ connectionString: url });
await client.connect();
await client.query("DROP SCHEMA IF EXISTS graphile_worker CASCADE");
await runMigrations({ connectionString: url, logger });

const utils = await makeWorkerUtils({ connectionString: url, logger });
const t0 = performance.now();
const chunk = 10000;
for (let i = 0; i < n; i += chunk) {
  const specs = [];
  for (let j = i; j < Math.min(n, i + chunk); j++) {
    specs.push({ identifier: "noop", payload: { i: j } });
  }
  await utils.addJobs(specs);
}
const enqueueSecs = (performance.now() - t0) / 1000;
await utils.release();

let handled = 0;
let allHandled;
const handledAll = new Promise((resolve) => (allHandled = resolve));
const preset =
  mode === "batched"
    ? {
        worker: {
          localQueue: { size: 200 },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
        },
      }
    : {};
// Autovacuums of the jobs table so far (an insert-driven one may fall in the enqueue).
async function jobsAutovacuums() {
  const { rows } = await client.query(
    `SELECT autovacuum_count::int AS c FROM pg_stat_user_tables
     WHERE schemaname = 'graphile_worker' AND relname = '_private_jobs'`,
  );
  return rows.length === 1 ? rows[0].c : null;
}
const vacuums1 = await jobsAutovacuums();
const t1 = performance.now();
const cpu1 = machineCpuMs();
const runner = await run({
  connectionString: url,
  concurrency,
  noHandleSignals: true,
  pollInterval: 1000,
  preset,
  logger,
  taskList: {
    noop: async () => {
      handled += 1;
      if (handled === n) allHandled();
    },
  },
});
await handledAll;
// The last completion is recorded when the job row is gone.
for (;;) {
  const { rows } = await client.query(
    "SELECT count(*)::int AS c FROM graphile_worker._private_jobs",
  );
  if (rows[0].c === 0) break;
  await new Promise((r) => setTimeout(r, 5));
}
const drainSecs = (performance.now() - t1) / 1000;
const cpu2 = machineCpuMs();
const vacuums2 = await jobsAutovacuums();
await runner.stop();
await client.end();
console.log(
  JSON.stringify({
    queue: "graphile-worker 0.18.0",
    mode,
    n,
    concurrency,
    enqueue_per_s: Math.round(n / enqueueSecs),
    drain_per_s: Math.round(n / drainSecs),
    drain_s: Number(drainSecs.toFixed(2)),
    machine_cpu_us_per_job:
      cpu1 === null || cpu2 === null ? null : Number((((cpu2 - cpu1) * 1000) / n).toFixed(1)),
    jobs_autovacuums: vacuums1 === null || vacuums2 === null ? null : vacuums2 - vacuums1,
  }),
);
