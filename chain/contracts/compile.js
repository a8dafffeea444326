// Compile RallyToken.sol with solc-js (npm "solc", pinned in package.json) and write the
// artifact RallyToken.json: ABI, bytecode, compiler version, evmVersion, source hash.
// Usage: node compile.js [--check]   (--check: compare with the committed artifact, exit 1 if it differs)
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require("solc");

const EVM_VERSION = "cancun";
const here = __dirname;
const sourceName = "RallyToken.sol";
const source = fs.readFileSync(path.join(here, sourceName), "utf8");

function findImports(p) {
  const file = path.join(here, "node_modules", p);
  if (fs.existsSync(file)) return { contents: fs.readFileSync(file, "utf8") };
  return { error: "not found: " + p };
}

const input = {
  language: "Solidity",
  sources: { [sourceName]: { content: source } },
  settings: {
    evmVersion: EVM_VERSION,
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const c = out.contracts[sourceName].RallyToken;
const ozVersion = require(path.join(here, "node_modules/@openzeppelin/contracts/package.json")).version;
const artifact = {
  contractName: "RallyToken",
  compiler: "solc-js " + solc.version(),
  evmVersion: EVM_VERSION,
  optimizerRuns: 200,
  openzeppelin: ozVersion,
  sourceSha256: crypto.createHash("sha256").update(source).digest("hex"),
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
};
const text = JSON.stringify(artifact, null, 1) + "\n";
const target = path.join(here, "RallyToken.json");
if (process.argv.includes("--check")) {
  const committed = fs.readFileSync(target, "utf8");
  if (committed !== text) {
    console.error("RallyToken.json differs from a fresh compile: run node chain/contracts/compile.js");
    process.exit(1);
  }
  console.log("RallyToken.json matches a fresh compile");
} else {
  fs.writeFileSync(target, text);
  console.log("wrote " + target + " (" + artifact.compiler + ", " + EVM_VERSION + ")");
}
