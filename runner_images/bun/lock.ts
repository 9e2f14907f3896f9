/**
 * A locked Bun script's dependencies (docs/runners.md, "Pinned dependencies"): `code/script.lock` is Windmill's
 * Bun lock (package.json, the line `//bun.lock`, then bun.lock, or `<empty>`). It is installed once with
 * `bun install --frozen-lockfile` into `$KUBEMILL_CACHE_DIR/bun/lock-<sha256 of the lock>` (a staging
 * directory renamed into place only when bun succeeded, with a download cache of its own so that every
 * package is checked against the lock's integrity hash), and the script's imports are resolved there only.
 */
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join, sep } from "node:path";
import process from "node:process";

export const LOCK_SPLIT = "\n//bun.lock\n";
export const EMPTY = "<empty>";
/** `name` or `@scope/name`, a version pinned in the import string, the subpath (Windmill's pattern). */
const PACKAGE = /^((?:@[^/@]+\/[^/@]+)|(?:[^/@]+))(?:@([^/]+))?(.*)$/;

export class DependencyError extends Error {
  override name = "DependencyError";
}

/** The folder whose node_modules holds the lock's packages; null for a lock without any (`<empty>`). */
export interface Installed {
  root: string | null;
  packages: string[];
}

/** A bare import's package and the import without its pinned version (`is-odd@3/x` -> `is-odd`, `is-odd/x`). */
export function unpinned(specifier: string): { name: string; bare: string } | null {
  const found = PACKAGE.exec(specifier);
  return found ? { name: found[1], bare: found[1] + found[3] } : null;
}

function setting(name: string, fallback: string): string {
  return process.env[name] || fallback;
}

/** Install the lock at `lockFile` (once per lock) and say where; DependencyError when bun refuses it. */
export function installLock(lockFile: string): Installed {
  const text = readFileSync(lockFile, "utf-8");
  const normalized = text.replace(/\r\n/g, "\n");
  const at = normalized.indexOf(LOCK_SPLIT);
  if (at < 0) throw new DependencyError("the lock is not a Bun lock (package.json, `//bun.lock`, bun.lock)");
  const packageJson = normalized.slice(0, at);
  const bunLock = normalized.slice(at + LOCK_SPLIT.length);
  const dependencies: Record<string, string> = JSON.parse(packageJson).dependencies ?? {};
  const packages = Object.entries(dependencies).map(([name, version]) => `${name}@${version}`);
  if (bunLock.trim() === EMPTY) return { root: null, packages };
  const digest = "lock-" + createHash("sha256").update(text).digest("hex").slice(0, 32);
  const shared = process.env.KUBEMILL_SHARED_DEPS_DIR;
  if (shared && existsSync(join(shared, "bun", digest, "node_modules"))) {
    return { root: join(shared, "bun", digest), packages };
  }
  const parent = join(setting("KUBEMILL_CACHE_DIR", join(homedir(), ".cache", "kubemill", "deps")), "bun");
  const target = join(parent, digest);
  if (existsSync(target)) return { root: target, packages };
  mkdirSync(parent, { recursive: true });
  const staging = mkdtempSync(join(parent, ".install-"));
  writeFileSync(join(staging, "package.json"), packageJson);
  writeFileSync(join(staging, "bun.lock"), bunLock);
  const what = `the lock's ${packages.join(" ")}`;
  process.stderr.write(`kubemill: installing ${what}\n`);
  const done = Bun.spawnSync({
    // No package's lifecycle scripts run (as uv installs wheels only): an install may fill the namespace's
    // shared cache, which must hold only what the lock names.
    cmd: [
      process.execPath,
      "install",
      "--frozen-lockfile",
      "--ignore-scripts",
      "--no-progress",
      "--no-summary",
    ],
    cwd: staging,
    env: { ...process.env, BUN_INSTALL_CACHE_DIR: join(staging, ".bun-cache"), DO_NOT_TRACK: "1" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const output = `${done.stdout.toString()}${done.stderr.toString()}`;
  process.stderr.write(output);
  rmSync(join(staging, ".bun-cache"), { recursive: true, force: true });
  if (done.exitCode !== 0) {
    rmSync(staging, { recursive: true, force: true });
    const reasons = output.split("\n").map((l) => l.trim()).filter((l) => l.startsWith("error:"));
    const why = reasons.length ? `: ${reasons.join(" ")}`.slice(0, 1000) : "; see the log";
    throw new DependencyError(`installing ${what} failed (bun install exit ${done.exitCode})${why}`);
  }
  try {
    renameSync(staging, target);
  } catch {
    rmSync(staging, { recursive: true, force: true }); // another run installed the same lock first
  }
  return { root: target, packages };
}

/** Where `specifier` (a bare import, without its pinned version) resolves in the install, or null. */
export function resolveIn(installed: Installed, specifier: string): string | null {
  if (installed.root === null) return null;
  try {
    const path = Bun.resolveSync(specifier, installed.root);
    const inside = [installed.root, realpathSync(installed.root)].map((root) => join(root, "node_modules") + sep);
    return inside.some((prefix) => path.startsWith(prefix)) ? path : null; // not a node_modules further up
  } catch {
    return null;
  }
}
