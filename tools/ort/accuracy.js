#!/usr/bin/env node
// Measures a classifier's top-1 accuracy with ONNX Runtime (onnxruntime-node,
// CPU): the outside check of a mixq export in examples/pipeline's gate.
//
//   node tools/ort/accuracy.js MODEL.onnx INPUTS LABELS [--normalize MEAN,STD]
//        [--samples BEGIN:END | --last N [--max-samples M]] [--batch-size N]
//        [--no-optimize]
//
// INPUTS: .npy (float32, or int64/int32 token ids) shaped [N, ...] with the
// model input's per-sample size, or IDX images (raw or .gz; uint8 scaled to
// [0, 1]): the data a mixq job reads. Float inputs are then normalised as a
// job's --normalize: (x - MEAN) / STD. LABELS: .npy integers [N] or IDX
// labels. --samples: only those samples; --last N: the last N of the first M
// (--max-samples; default all) samples, a job's held-out validation set
// (Job.val_samples of the samples its max_samples used).
// The model's first input and first output ([batch, classes] logits) are
// used. Prints one JSON line: {"accuracy", "correct", "samples"}.
// Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
'use strict';

const fs = require('fs');
const zlib = require('zlib');
const ort = require('onnxruntime-node');
const {readNpy} = require('./run_model.js');

const USAGE = 'usage: accuracy.js MODEL.onnx INPUTS LABELS ' +
    '[--normalize MEAN,STD] [--samples BEGIN:END | --last N ' +
    '[--max-samples M]] [--batch-size N] [--no-optimize]\n';
const DEFAULT_BATCH = 256;
const IDX_UINT8 = 0x08;

// An IDX file (raw or gzip) of uint8 values as {dims, data, type: 'uint8'}.
function readIdx(path) {
  let bytes = fs.readFileSync(path);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = zlib.gunzipSync(bytes);
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0 ||
      bytes[2] !== IDX_UINT8) {
    throw new Error(`${path}: not a .npy or uint8 IDX file`);
  }
  const rank = bytes[3];
  const dims = [];
  for (let i = 0; i < rank; ++i) dims.push(bytes.readUInt32BE(4 + 4 * i));
  const values = bytes.subarray(4 + 4 * rank);
  const count = dims.reduce((a, b) => a * b, 1);
  if (values.length !== count) {
    throw new Error(`${path}: ${values.length} values for shape (${dims})`);
  }
  return {dims, data: values, type: 'uint8'};
}

function readData(path) {
  const head = fs.readFileSync(path).subarray(0, 1);
  return head[0] === 0x93 ? readNpy(path) : readIdx(path);
}

// The tensor of samples [start, stop) as the model gets them: uint8 (IDX
// images) scaled to [0, 1], float then normalised as a job's, token ids as
// they are. Converted per batch: a 60 000-image file stays uint8.
function batchTensor(inputs, start, stop, sampleDims, normalize) {
  const perSample = inputs.data.length / inputs.dims[0];
  const raw = inputs.data.subarray(start * perSample, stop * perSample);
  const dims = [stop - start, ...sampleDims];
  if (inputs.type !== 'uint8' && inputs.type !== 'float32') {
    return new ort.Tensor(inputs.type, raw.slice(), dims);
  }
  const scale = inputs.type === 'uint8' ? 1 / 255 : 1;
  const [mean, std] = normalize || [0, 1];
  const data = Float32Array.from(raw, (x) => (x * scale - mean) / std);
  return new ort.Tensor('float32', data, dims);
}

function parseArgs(argv) {
  const args = {positional: [], normalize: null, samples: null, last: null,
                maxSamples: null, batch: DEFAULT_BATCH, optimize: true};
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i];
    if (arg === '--no-optimize') {
      args.optimize = false;
    } else if (arg === '--normalize') {
      args.normalize = argv[++i].split(',').map(Number);
      if (args.normalize.length !== 2 || args.normalize.some(isNaN)) return null;
    } else if (arg === '--samples') {
      args.samples = argv[++i].split(':').map(Number);
      if (args.samples.length !== 2 || args.samples.some(isNaN)) return null;
    } else if (arg === '--last' || arg === '--max-samples') {
      const value = Number(argv[++i]);
      if (!(Number.isInteger(value) && value > 0)) return null;
      args[arg === '--last' ? 'last' : 'maxSamples'] = value;
    } else if (arg === '--batch-size') {
      args.batch = Number(argv[++i]);
      if (!(args.batch > 0)) return null;
    } else if (arg.startsWith('--')) {
      return null;
    } else {
      args.positional.push(arg);
    }
  }
  const ranges = (args.samples !== null) + (args.last !== null);
  return args.positional.length === 3 && ranges <= 1 ? args : null;
}

async function main(argv) {
  const args = parseArgs(argv);
  if (!args) {
    process.stderr.write(USAGE);
    return 2;
  }
  const [modelPath, inputsPath, labelsPath] = args.positional;
  const inputs = readData(inputsPath);
  const labels = readData(labelsPath);
  const total = inputs.dims[0];
  if (labels.type === 'float32') {
    throw new Error(`${labelsPath}: labels must be integers, not float32`);
  }
  if (labels.data.length !== total) {
    throw new Error(`${labelsPath}: ${labels.data.length} labels for ` +
                    `${total} samples`);
  }
  const used = Math.min(args.maxSamples || total, total);
  const [begin, end] = args.samples ||
      (args.last !== null ? [used - args.last, used] : [0, used]);
  if (!(0 <= begin && begin < end && end <= total)) {
    throw new Error(`--samples ${begin}:${end} is outside [0, ${total})`);
  }
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: args.optimize ? 'all' : 'disabled',
  });
  const perSample = inputs.data.length / total;
  // The model's per-sample shape when fixed, else the data's.
  const modelDims = session.inputMetadata[0].shape.slice(1);
  const sampleDims = modelDims.every(Number.isInteger) &&
          modelDims.reduce((a, b) => a * b, 1) === perSample ?
      modelDims : inputs.dims.slice(1);
  let correct = 0;
  for (let start = begin; start < end; start += args.batch) {
    const stop = Math.min(start + args.batch, end);
    const feed =
        batchTensor(inputs, start, stop, sampleDims, args.normalize);
    const results = await session.run({[session.inputNames[0]]: feed});
    const logits = results[session.outputNames[0]];
    const classes = logits.dims[logits.dims.length - 1];
    for (let i = 0; i < stop - start; ++i) {
      let best = 0;
      for (let c = 1; c < classes; ++c) {
        if (logits.data[i * classes + c] > logits.data[i * classes + best]) {
          best = c;
        }
      }
      correct += best === Number(labels.data[start + i]);
    }
  }
  process.stdout.write(JSON.stringify(
      {accuracy: correct / (end - begin), correct, samples: end - begin}) +
      '\n');
  return 0;
}

main(process.argv.slice(2)).then(
    (code) => process.exit(code), (error) => {
      process.stderr.write(`accuracy.js: ${error.message}\n`);
      process.exit(1);
    });
