#!/usr/bin/env node
// Compile the coordinator contracts (contracts/*.sol, one compilation) with the pinned solcjs
// (package.json) and write one artifact per deployable contract (ABI, bytecode, compiler
// settings) as canonical JSON:
//   FCMPCCoordinator        the paper's coordination (every upload on chain)
//   FCMPCCommitCoordinator  commit-and-challenge coordination (one Merkle root per MPC step)
// Both inherit FCMPCBase.sol (community, bounds check, fixed-point combination and theta^2).
//
//   node contracts/compile.js [DIR]      write DIR/<NAME>.json; default DIR: ecjax/chain/artifacts
//   node contracts/compile.js - [NAME]   write NAME's artifact to stdout (default FCMPCCoordinator)
//
// The output is deterministic (sorted keys, no timestamps, no absolute paths), so a fresh
// compile can be compared byte for byte with the committed artifacts (tests/chain).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const NAMES = ["FCMPCCoordinator", "FCMPCCommitCoordinator"];
const SETTINGS = {
  optimizer: { enabled: true, runs: 1000000 },
  viaIR: true,
  evmVersion: "prague",
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function sortKeys(x) {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (x && typeof x === "object") {
    const o = {};
    for (const k of Object.keys(x).sort()) o[k] = sortKeys(x[k]);
    return o;
  }
  return x;
}

function main() {
  const here = __dirname;
  const sources = {};
  for (const f of fs.readdirSync(here).filter((f) => f.endsWith(".sol")).sort()) {
    sources[f] = { content: fs.readFileSync(path.join(here, f), "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) process.exit(1);
  const text = {};
  for (const name of NAMES) {
    const source = `${name}.sol`;
    const c = output.contracts[source][name];
    const artifact = sortKeys({
      contractName: name,
      source: `contracts/${source}`,
      compiler: { name: "solcjs", version: solc.version(), settings: { ...SETTINGS, outputSelection: undefined } },
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    });
    text[name] = JSON.stringify(artifact, null, 1) + "\n";
  }
  if (process.argv[2] === "-") {
    const name = process.argv[3] || NAMES[0];
    if (!(name in text)) {
      process.stderr.write(`unknown contract ${name}; one of ${NAMES.join(", ")}\n`);
      process.exit(2);
    }
    process.stdout.write(text[name]);
    return;
  }
  const dir = process.argv[2] || path.join(here, "..", "ecjax", "chain", "artifacts");
  for (const name of NAMES) fs.writeFileSync(path.join(dir, `${name}.json`), text[name]);
}

main();
