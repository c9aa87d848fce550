#!/usr/bin/env node
// Compile contracts/FCMPCCoordinator.sol with the pinned solcjs (package.json) and write the
// artifact (ABI, bytecode, compiler settings) as canonical JSON.
//
//   node contracts/compile.js [OUT]     default OUT: ecjax/chain/artifacts/FCMPCCoordinator.json
//   node contracts/compile.js -         write to stdout
//
// The output is deterministic (sorted keys, no timestamps, no absolute paths), so a fresh
// compile can be compared byte for byte with the committed artifact (tests/chain).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const NAME = "FCMPCCoordinator";
const SOURCE = `${NAME}.sol`;
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
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
  const src = fs.readFileSync(path.join(here, SOURCE), "utf8");
  const input = { language: "Solidity", sources: { [SOURCE]: { content: src } }, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) process.exit(1);
  const c = output.contracts[SOURCE][NAME];
  const artifact = sortKeys({
    contractName: NAME,
    source: `contracts/${SOURCE}`,
    compiler: { name: "solcjs", version: solc.version(), settings: { ...SETTINGS, outputSelection: undefined } },
    abi: c.abi,
    bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  });
  const text = JSON.stringify(artifact, null, 1) + "\n";
  const out = process.argv[2] || path.join(here, "..", "ecjax", "chain", "artifacts", `${NAME}.json`);
  if (out === "-") process.stdout.write(text);
  else fs.writeFileSync(out, text);
}

main();
