// BullMQ side of the orgsync-queue benchmark: N no-op jobs through one Worker with the
// given concurrency, against the given Redis. Prints one JSON line.
// Usage: node bench.mjs <jobs> <concurrency> [redis-port] [redis-host]
import { Queue, Worker } from 'bullmq';

const jobs = Number(process.argv[2] ?? 1000);
const concurrency = Number(process.argv[3] ?? 32);
const connection = {
  host: process.argv[5] ?? '127.0.0.1',
  port: Number(process.argv[4] ?? 6379),
  maxRetriesPerRequest: null,
};
const name = `orgsync-bench-${process.pid}-${Date.now()}`;

const queue = new Queue(name, { connection });
await queue.waitUntilReady();
const enqueueStart = performance.now();
for (let i = 0; i < jobs; i += 1000) {
  const chunk = [];
  for (let j = i; j < Math.min(jobs, i + 1000); j++) {
    chunk.push({ name: 'noop', data: { n: j } });
  }
  await queue.addBulk(chunk);
}
const enqueueMs = performance.now() - enqueueStart;

let done = 0;
let start = 0;
const finished = new Promise((resolve) => {
  const worker = new Worker(
    name,
    async () => {},
    { connection, concurrency, autorun: false },
  );
  worker.on('completed', () => {
    done += 1;
    if (done === jobs) {
      resolve(worker);
    }
  });
  start = performance.now();
  worker.run();
});
const worker = await finished;
const seconds = (performance.now() - start) / 1000;
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
console.log(JSON.stringify({ jobs, concurrency, seconds, jobs_per_sec: jobs / seconds, enqueue_ms: enqueueMs }));
