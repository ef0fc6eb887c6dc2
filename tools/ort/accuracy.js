#!/usr/bin/env node
// Measures a classifier's top-1 accuracy with ONNX Runtime (onnxruntime-node,
// CPU): the outside check of a mixq export in examples/pipeline's gate.
//
//   node tools/ort/accuracy.js MODEL.onnx INPUTS LABELS [--normalize MEAN,STD]
//        [--samples BEGIN:END | --last N [--max-samples M]] [--batch-size N]
//        [--no-optimize]
//
// INPUTS: .npy (float32, or int64/int32 token ids) shaped [N, ...] with the
// model input's per-sample size, IDX images (raw or .gz; uint8 scaled to
// [0, 1]) or .npz (np.savez: the only array, or x/inputs/images/data; one
// array per graph input, by name, for a model with several): the data a
// mixq job reads. Float inputs are then normalised as a job's --normalize:
// (x - MEAN) / STD. LABELS: .npy integers [N], IDX labels, or .npz (the only
// array, or y/labels/targets). --samples: only those samples; --last N: the last N of the first M
// (--max-samples; default all) samples, a job's held-out validation set
// (Job.val_samples of the samples its max_samples used).
// The model's first input and first output ([batch, classes] logits) are
// used. Prints one JSON line: {"accuracy", "correct", "samples"}.
// Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
'use strict';

const fs = require('fs');
const zlib = require('zlib');
const ort = require('onnxruntime-node');
const AdmZip = require('adm-zip');  // a dependency of onnxruntime-node
const {parseNpy, readNpy} = require('./run_model.js');

const USAGE = 'usage: accuracy.js MODEL.onnx INPUTS LABELS ' +
    '[--normalize MEAN,STD] [--samples BEGIN:END | --last N ' +
    '[--max-samples M]] [--batch-size N] [--no-optimize]\n';
const DEFAULT_BATCH = 256;
const IDX_UINT8 = 0x08;
const NPY_FIRST_BYTE = 0x93;
const ZIP_FIRST_BYTE = 0x50;  // 'P' of "PK"
// The .npz member names of a job's inputs and labels (README, `submit`).
const INPUT_KEYS = ['x', 'inputs', 'images', 'data'];
const LABEL_KEYS = ['y', 'labels', 'targets'];

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

// The arrays of a .npz file by name (without ".npy").
function readNpz(path) {
  const arrays = {};
  for (const entry of new AdmZip(path).getEntries()) {
    if (!entry.entryName.endsWith('.npy')) continue;
    arrays[entry.entryName.slice(0, -4)] =
        parseNpy(entry.getData(), `${path}:${entry.entryName}`);
  }
  return arrays;
}

// The arrays of a data file by name: a .npz's members, else {'': array}.
function readArrays(path) {
  const head = fs.readFileSync(path).subarray(0, 1)[0];
  if (head === ZIP_FIRST_BYTE) return readNpz(path);
  return {'': head === NPY_FIRST_BYTE ? readNpy(path) : readIdx(path)};
}

// The one array of `arrays` meant by `keys` (or the only one), for `path`.
function pick(arrays, keys, path) {
  const names = Object.keys(arrays);
  if (names.length === 1) return arrays[names[0]];
  const key = keys.find((k) => k in arrays);
  if (key === undefined) {
    throw new Error(`${path}: holds ${names.join(', ')}; expected one array ` +
                    `or one of ${keys.join(', ')}`);
  }
  return arrays[key];
}

// The model's feeds by input name: the one input from the only array (or
// INPUT_KEYS), several from the arrays of the same names.
function modelInputs(session, path) {
  const arrays = readArrays(path);
  if (session.inputNames.length === 1) {
    return {[session.inputNames[0]]: pick(arrays, INPUT_KEYS, path)};
  }
  const feeds = {};
  for (const name of session.inputNames) {
    if (!(name in arrays)) {
      throw new Error(`${path}: no array '${name}' for the model's input ` +
                      `'${name}' (holds ${Object.keys(arrays).join(', ')})`);
    }
    feeds[name] = arrays[name];
  }
  return feeds;
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
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: args.optimize ? 'all' : 'disabled',
  });
  const inputs = modelInputs(session, inputsPath);
  const labels = pick(readArrays(labelsPath), LABEL_KEYS, labelsPath);
  if (labels.type === 'float32') {
    throw new Error(`${labelsPath}: labels must be integers, not float32`);
  }
  const total = labels.data.length;
  for (const [name, array] of Object.entries(inputs)) {
    if (array.dims[0] !== total) {
      throw new Error(`${inputsPath}: ${array.dims[0]} samples of input ` +
                      `'${name}' for ${total} labels`);
    }
  }
  const used = Math.min(args.maxSamples || total, total);
  const [begin, end] = args.samples ||
      (args.last !== null ? [used - args.last, used] : [0, used]);
  if (!(0 <= begin && begin < end && end <= total)) {
    throw new Error(`--samples ${begin}:${end} is outside [0, ${total})`);
  }
  // Each input's per-sample shape: the model's when fixed, else the data's.
  const sampleDims = {};
  for (const meta of session.inputMetadata) {
    const array = inputs[meta.name];
    const modelDims = meta.shape.slice(1);
    sampleDims[meta.name] = modelDims.every(Number.isInteger) &&
            modelDims.reduce((a, b) => a * b, 1) * total ===
                array.data.length ?
        modelDims : array.dims.slice(1);
  }
  let correct = 0;
  for (let start = begin; start < end; start += args.batch) {
    const stop = Math.min(start + args.batch, end);
    const feeds = {};
    for (const [name, array] of Object.entries(inputs)) {
      feeds[name] = batchTensor(array, start, stop, sampleDims[name],
                                args.normalize);
    }
    const results = await session.run(feeds);
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
