// The packages' shape: the hand-written TypeScript declarations (packages/*/src/index.d.ts)
// compile as test/types/usage.ts uses both packages (as their README shows) under `strict`, with
// the declarations themselves checked (no skipLibCheck), and its `@ts-expect-error` lines are
// errors; every export of the code is declared; the browser package depends on nothing.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import * as client from "@waitroom/client";
import * as verifier from "@waitroom/node";

const require = createRequire(import.meta.url);
/** Longest a type check may take (a cold tsc on a loaded 2-core machine). */
const TSC_TIMEOUT_MS = 120_000;

test("the declarations compile as used, and refuse misuse", async () => {
  const tsc = require.resolve("typescript/bin/tsc");
  const project = fileURLToPath(new URL("./types/tsconfig.json", import.meta.url));
  try {
    await promisify(execFile)(process.execPath, [tsc, "-p", project], { timeout: TSC_TIMEOUT_MS });
  } catch (error) {
    assert.fail(`tsc found errors:\n${error.stdout}${error.stderr}`);
  }
});

test("every export of the code is declared", () => {
  for (const [name, module] of [["client", client], ["node", verifier]]) {
    const declarations = readFileSync(new URL(`../packages/${name}/src/index.d.ts`, import.meta.url), "utf8");
    for (const exported of Object.keys(module)) {
      assert.match(declarations, new RegExp(`export declare (const|function|class) ${exported}\\b`), `${name}: ${exported} is not declared`);
    }
  }
});

test("the browser package has no dependencies and imports nothing", () => {
  const manifest = JSON.parse(readFileSync(new URL("../packages/client/package.json", import.meta.url), "utf8"));
  for (const field of ["dependencies", "peerDependencies", "optionalDependencies", "bundleDependencies"]) {
    assert.equal(manifest[field], undefined, `@waitroom/client has ${field}`);
  }
  const source = readFileSync(new URL("../packages/client/src/index.js", import.meta.url), "utf8");
  assert.doesNotMatch(source, /^\s*import\s/m);
  assert.doesNotMatch(source, /\brequire\(|\bimport\(/);
});
