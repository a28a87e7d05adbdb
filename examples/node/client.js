#!/usr/bin/env node
// A Node client of both TransTIC services, built from proto/ alone (no generated code):
// @grpc/proto-loader reads proto/transtic/v1/api.proto at run time, @grpc/grpc-js calls.
//
// It asks each service what it serves (GetInfo), codes an image at the edge
// (Encoder/Encode) and has the cloud analyse the bitstream (Analytics/Analyze), then
// prints one JSON object with the answers. Errors exit 1 with the gRPC status on stderr.
//
//   npm install @grpc/grpc-js @grpc/proto-loader
//   TRANSTIC_API_KEY=... node client.js --encoder localhost:50052 \
//       --analytics localhost:50051 --image frame.png [--task classification] [--ca ca.pem]
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "proto");

function parseArgs(argv) {
  const args = { task: "", quality: 0, proto: PROTO_ROOT, timeout: 120 };
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, "");
    if (!(name in args) && !["encoder", "analytics", "image", "ca"].includes(name)) {
      throw new Error(`unknown option ${argv[i]}`);
    }
    args[name] = argv[i + 1];
  }
  for (const required of ["encoder", "analytics", "image"]) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  return args;
}

function loadContract(protoRoot) {
  const definition = protoLoader.loadSync("transtic/v1/api.proto", {
    includeDirs: [protoRoot],
    keepCase: true, // field names exactly as in the proto (bits_per_pixel, codec_id, ...)
    longs: String, // uint64 sequence numbers do not fit a JS number
    enums: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).transtic.v1;
}

// Unary call as a promise, with the API key in the metadata and a deadline.
function call(client, method, request, metadata, timeoutS) {
  const deadline = new Date(Date.now() + timeoutS * 1000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => {
      if (error) {
        const status = Object.keys(grpc.status).find((k) => grpc.status[k] === error.code);
        reject(new Error(`${method}: ${status} (${error.code}): ${error.details}`));
      } else {
        resolve(reply);
      }
    });
  });
}

function summarizeInfo(info) {
  return {
    service: info.service,
    version: info.version,
    default_task: info.default_task,
    ready_tasks: info.ready_tasks,
    models: info.models.map((m) => ({
      id: m.id, kind: m.kind, task: m.task, quality: m.quality,
      fingerprint: m.fingerprint, ready: m.ready,
    })),
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const v1 = loadContract(args.proto);
  const credentials = args.ca
    ? grpc.credentials.createSsl(fs.readFileSync(args.ca))
    : grpc.credentials.createInsecure();
  const metadata = new grpc.Metadata();
  if (process.env.TRANSTIC_API_KEY) {
    metadata.set("authorization", `Bearer ${process.env.TRANSTIC_API_KEY}`);
  }
  const encoder = new v1.Encoder(args.encoder, credentials);
  const analytics = new v1.Analytics(args.analytics, credentials);
  const timeout = Number(args.timeout);
  try {
    const encoderInfo = await call(encoder, "GetInfo", {}, metadata, timeout);
    const analyticsInfo = await call(analytics, "GetInfo", {}, metadata, timeout);
    const encoded = await call(encoder, "Encode", {
      image: fs.readFileSync(args.image), task: args.task, quality: Number(args.quality),
    }, metadata, timeout);
    const result = await call(analytics, "Analyze", { bitstream: encoded.bitstream }, metadata, timeout);
    console.log(JSON.stringify({
      encoder: summarizeInfo(encoderInfo),
      analytics: summarizeInfo(analyticsInfo),
      encoded: {
        bytes: encoded.bitstream.length,
        bits_per_pixel: encoded.bits_per_pixel,
        width: encoded.width,
        height: encoded.height,
        codec_id: encoded.codec_id,
        fingerprint: encoded.fingerprint,
        quality: encoded.quality,
        task: encoded.task,
      },
      analysis: {
        task: result.task,
        labels: result.labels,
        detections: result.detections.length,
        width: result.width,
        height: result.height,
        bits_per_pixel: result.bits_per_pixel,
        codec_id: result.codec_id,
        task_model_id: result.task_model_id,
      },
    }, null, 1));
  } finally {
    encoder.close();
    analytics.close();
  }
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
