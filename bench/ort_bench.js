#!/usr/bin/env node
// Times ONNX Runtime inference on the models mixq-bench times, for
// scripts/bench.sh --real.
//
//   node bench/ort_bench.js [--batch 128] [--threads 2] [--min-time 2] MODEL.onnx...
//
// ONNX Runtime 1.30 (onnxruntime-node from tools/ort/node_modules, installed
// by `npm install --ignore-scripts` there), CPU execution provider,
// intraOpNumThreads = --threads, interOpNumThreads = 1, sequential execution,
// all graph optimizations on. The model's single float input gets its shape
// from the model with the batch dimension set to --batch, filled with seeded
// Gaussian values. Measured like mixq-bench: 2 warm-up runs (1 if it alone
// took --min-time), then runs until --min-time seconds have passed and at
// least 3 ran (1 if that one took --min-time); throughput from the median run.
// Prints a report and
//   RESULT ort <model> inference <samples/s>
//   RESULT ort <model> peak_rss_mib <MiB>   (process.resourceUsage().maxRSS,
//                                            node's own ~50 MiB included)
// Run one model per process for per-model peak RSS, as scripts/bench.sh does.
// Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
'use strict';

const path = require('path');
const ort = require(path.join(__dirname, '..', 'tools', 'ort', 'node_modules',
                              'onnxruntime-node'));

const WARMUP_ITERATIONS = 2;
const MIN_ITERATIONS = 3;
const SEED = 1;
const KIB_PER_MIB = 1024;
const MS_PER_SECOND = 1e3;
const UINT32_RANGE = 2 ** 32;
const USAGE = 'usage: ort_bench.js [--batch N] [--threads N] [--min-time S] ' +
    'MODEL.onnx...\n';

// mulberry32: a small seeded uniform generator in (0, 1); node has no
// seedable Math.random.
function uniformGenerator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / UINT32_RANGE;
  };
}

// `count` standard normal values (Box-Muller) from `seed`.
function gaussian(count, seed) {
  const uniform = uniformGenerator(seed);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(uniform()));
    const angle = 2 * Math.PI * uniform();
    values[i] = radius * Math.cos(angle);
    if (i + 1 < count) values[i + 1] = radius * Math.sin(angle);
  }
  return values;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function nowSeconds() {
  return Number(process.hrtime.bigint()) / 1e9;
}

// Seconds per run of the median timed run, and how many were timed; the
// same rule as mixq-bench's TimeLoop.
async function timeLoop(minSeconds, step) {
  const warmupStart = nowSeconds();
  for (let i = 0; i < WARMUP_ITERATIONS; ++i) {
    await step();
    if (nowSeconds() - warmupStart >= minSeconds) break;
  }
  const times = [];
  const start = nowSeconds();
  let last = start;
  do {
    await step();
    const now = nowSeconds();
    times.push(now - last);
    last = now;
  } while (last - start < minSeconds ||
           (times.length < MIN_ITERATIONS && times[0] < minSeconds));
  return {perIteration: median(times), iterations: times.length};
}

// {batch, threads, minSeconds, models}, or null on a usage error.
function parseArgs(argv) {
  const options = {batch: 128, threads: 2, minSeconds: 2, models: []};
  const flags = {'--batch': 'batch', '--threads': 'threads',
                 '--min-time': 'minSeconds'};
  for (let i = 0; i < argv.length; ++i) {
    if (!argv[i].startsWith('--')) {
      options.models.push(argv[i]);
      continue;
    }
    const key = flags[argv[i]];
    const value = Number(argv[i + 1]);
    if (key === undefined || !(value > 0)) return null;
    options[key] = value;
    ++i;
  }
  return options.models.length > 0 ? options : null;
}

async function benchModel(modelPath, options) {
  const name = path.basename(modelPath, '.onnx');
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ['cpu'],
    intraOpNumThreads: options.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  if (session.inputMetadata.length !== 1) {
    throw new Error(`${modelPath}: ${session.inputMetadata.length} inputs; ` +
                    'only single-input models are timed');
  }
  const input = session.inputMetadata[0];
  if (!input.isTensor || input.type !== 'float32' || input.shape.length < 1) {
    throw new Error(`${modelPath}: input '${input.name}' is not a float32 ` +
                    'tensor with a batch dimension');
  }
  const dims = [options.batch, ...input.shape.slice(1)];
  if (!dims.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`${modelPath}: input '${input.name}' has shape ` +
                    `[${input.shape}]; only the batch dimension may be symbolic`);
  }
  const count = dims.reduce((a, b) => a * b, 1);
  const feeds = {[input.name]: new ort.Tensor('float32', gaussian(count, SEED),
                                              dims)};
  console.log(`${name}: batch ${options.batch}, ${options.threads} threads, ` +
              `input '${input.name}' [${dims}]`);
  const timing =
      await timeLoop(options.minSeconds, () => session.run(feeds));
  const samplesPerSecond = options.batch / timing.perIteration;
  const peakMiB = process.resourceUsage().maxRSS / KIB_PER_MIB;  // maxRSS: KiB
  console.log(`  inference  ${samplesPerSecond.toFixed(1).padStart(10)} ` +
              `samples/s  (median ${(timing.perIteration * MS_PER_SECOND)
                  .toFixed(2)} ms/batch of ${timing.iterations})`);
  console.log(`  peak RSS   ${peakMiB.toFixed(1).padStart(10)} MiB`);
  console.log(`RESULT ort ${name} inference ${samplesPerSecond.toFixed(1)}`);
  console.log(`RESULT ort ${name} peak_rss_mib ${peakMiB.toFixed(1)}`);
  await session.release();
}

async function main(argv) {
  const options = parseArgs(argv);
  if (options === null) {
    process.stderr.write(USAGE);
    return 2;
  }
  for (const modelPath of options.models) await benchModel(modelPath, options);
  return 0;
}

main(process.argv.slice(2)).then(
    (code) => process.exit(code), (error) => {
      process.stderr.write(`ort_bench.js: ${error.message}\n`);
      process.exit(1);
    });
