#!/usr/bin/env node
// Runs an ONNX model with ONNX Runtime (onnxruntime-node, CPU) on a float32
// .npy input and writes its first output as a float32 .npy: the outside judge
// of the models mixq exports (tests/ort).
//
//   node tools/ort/run_model.js MODEL.onnx INPUT.npy OUTPUT.npy [--no-optimize]
//   node tools/ort/run_model.js MODEL.onnx NAME=INPUT.npy[,NAME=INPUT.npy...]
//        OUTPUT.npy [--no-optimize]
//
// INPUT.npy: format 1.x, little-endian float32 ('<f4') or int64 ('<i8',
// token ids and masks), C order, shape [N, ...]; a bare path feeds the
// model's only input, NAME=PATH pairs (comma-separated) feed the inputs so
// named. --no-optimize turns ORT's graph
// optimizations off: by default they fuse QuantizeLinear/DequantizeLinear
// pairs into integer kernels, which moves logits by up to ~0.25 against a
// float evaluation of the same QDQ graph (measured by tests/ort).
// Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.
// Also a module: parseNpy, readNpy and writeNpy (tools/ort/accuracy.js).
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);

// The .npy dtypes read: descr -> typed array and ORT tensor type. int32 and
// uint8 are for labels (np.save of an int32 or uint8 array).
const NPY_TYPES = {
  '<f4': {array: Float32Array, type: 'float32'},
  '<i8': {array: BigInt64Array, type: 'int64'},
  '<i4': {array: Int32Array, type: 'int32'},
  '|u1': {array: Uint8Array, type: 'uint8'},
};

// Parses a .npy file of a NPY_TYPES dtype: {dims, data, type}.
function readNpy(path) {
  return parseNpy(fs.readFileSync(path), path);
}

// Parses .npy bytes (`path` names them in errors).
function parseNpy(bytes, path) {
  if (bytes.length < 10 || !bytes.subarray(0, 6).equals(NPY_MAGIC)) {
    throw new Error(`${path}: not a .npy file`);
  }
  const major = bytes[6];
  const headerLength =
      major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header =
      bytes.toString('latin1', headerStart, headerStart + headerLength);
  const descr = /'descr':\s*'([^']*)'/.exec(header);
  const dtype = descr && NPY_TYPES[descr[1]];
  if (!dtype) {
    throw new Error(`${path}: dtype must be little-endian float32 ('<f4'), ` +
                    `int64 ('<i8'), int32 ('<i4') or uint8 ('|u1')`);
  }
  if (/'fortran_order':\s*True/.test(header)) {
    throw new Error(`${path}: Fortran order is not supported`);
  }
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!shape) throw new Error(`${path}: no shape in the header`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s)
                   .map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const dataStart = headerStart + headerLength;
  if (bytes.length - dataStart !== count * dtype.array.BYTES_PER_ELEMENT) {
    throw new Error(`${path}: ${bytes.length - dataStart} data bytes for ` +
                    `shape (${dims}) of ${dtype.type}`);
  }
  // Copy: the Buffer's offset need not be aligned.
  const data = new dtype.array(count);
  Buffer.from(data.buffer).set(bytes.subarray(dataStart));
  return {dims, data, type: dtype.type};
}

// Writes a float32 .npy file (format 1.0, header padded to 64 bytes).
function writeNpy(path, dims, data) {
  const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
  let header =
      `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  const unpadded = 10 + header.length + 1;
  header += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const prefix = Buffer.alloc(10);
  NPY_MAGIC.copy(prefix);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  fs.writeFileSync(path,
                   Buffer.concat([prefix, Buffer.from(header, 'latin1'), body]));
}

async function main(argv) {
  const positional = argv.filter((a) => !a.startsWith('--'));
  const flags = argv.filter((a) => a.startsWith('--'));
  const unknown = flags.filter((f) => f !== '--no-optimize');
  if (positional.length !== 3 || unknown.length > 0) {
    process.stderr.write(
        'usage: run_model.js MODEL.onnx INPUT.npy OUTPUT.npy [--no-optimize]\n');
    return 2;
  }
  const [modelPath, inputPath, outputPath] = positional;
  const options = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: flags.includes('--no-optimize') ? 'disabled' : 'all',
  };
  const session = await ort.InferenceSession.create(modelPath, options);
  const feeds = {};
  if (inputPath.includes('=')) {
    for (const pair of inputPath.split(',')) {
      const eq = pair.indexOf('=');
      const input = readNpy(pair.slice(eq + 1));
      feeds[pair.slice(0, eq)] =
          new ort.Tensor(input.type, input.data, input.dims);
    }
  } else {
    if (session.inputNames.length !== 1) {
      throw new Error(`${modelPath}: the model has ` +
                      `${session.inputNames.length} inputs; give NAME=PATH ` +
                      'for each');
    }
    const input = readNpy(inputPath);
    feeds[session.inputNames[0]] =
        new ort.Tensor(input.type, input.data, input.dims);
  }
  const results = await session.run(feeds);
  const output = results[session.outputNames[0]];
  if (output.type !== 'float32') {
    throw new Error(`${modelPath}: output '${session.outputNames[0]}' is ` +
                    `${output.type}, not float32`);
  }
  writeNpy(outputPath, output.dims, output.data);
  return 0;
}

module.exports = {parseNpy, readNpy, writeNpy};

if (require.main === module) {
  main(process.argv.slice(2)).then(
      (code) => process.exit(code), (error) => {
        process.stderr.write(`run_model.js: ${error.message}\n`);
        process.exit(1);
      });
}
