// Preloaded into `itk3 process` children by the bench (NODE_OPTIONS=--require): at exit, write the
// process's own CPU time (user + system, all threads, ms) to $ITK3_BENCH_CPU_FILE. On a shared host
// CPU time is far steadier than wall time, and it is what one core's throughput is bounded by.
const { writeFileSync } = require('node:fs');

process.on('exit', () => {
  const file = process.env.ITK3_BENCH_CPU_FILE;
  if (!file) return;
  const { user, system } = process.cpuUsage();
  writeFileSync(file, JSON.stringify({ cpuMs: (user + system) / 1000 }));
});
