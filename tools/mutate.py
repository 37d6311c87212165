#!/usr/bin/env python3
"""Mutation testing for sluice: does the suite notice when a promise breaks?

Makes mutants of one source file (one small change each: an operator, a
condition, a returned value, a constant, a deleted call), builds each in a
scratch copy of the tree and runs the given tests against it. A mutant the
tests fail on is killed; one they pass on survives and is listed, with its
line and change. Survivors are either a missing test or an equivalent
change (docs/testing.md says which, per file).

  tools/mutate.py FILE [--ctest REGEX]... [--busted SPEC]... [--target T]...
                  [--lines A-B[,C-D...]] [--sample N] [--seed S] [--list]

  --ctest REGEX   run `ctest -R REGEX` (the tests registered by the build)
  --busted SPEC   run one busted spec file under Lua 5.4, as unit.lua5.4 does
                  (SPEC may end in ::FILTER, busted's --filter)
  --target T      build target(s) a C mutant needs (default: the Lua 5.4
                  module, sluice_lua_lua5_4); core tests add their own
  --lines         only mutate these line ranges
  --functions F,G only mutate the bodies of these functions (C: name; Lua:
                  App:produce, or the last part of the name): ranges that
                  follow the code when it moves
  --sample N      run N mutants picked at random (seed --seed, default 1)
  --list          print the mutants and stop

Tests run in the order given, stopping at the first failure. The scratch
tree is $SLUICE_MUTATE_DIR (default build-mutate/ in the source tree): the
working tree is never modified. Results: build-mutate/results/<file>.txt.
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- mutants ---------------------------------------------------------------


def mask_strings(line, lang):
    """The line with string literals and the trailing comment blanked, so
    that operators are only found in code (positions are kept)."""
    out, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c in "\"'":
            j = i + 1
            while j < n and line[j] != c:
                j += 2 if line[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
            continue
        if lang == "lua" and line.startswith("--", i) or lang == "c" and (line.startswith("//", i) or line.startswith("/*", i)):
            out.append(" " * (n - i))
            break
        out.append(c)
        i += 1
    return "".join(out)[:n]


# (pattern on the masked line, replacement): every match is one mutant.
C_TOKENS = [
    (r"==", "!="), (r"!=", "=="),
    (r"(?<![<>\-])<=", "<"), (r"(?<![<>\-])>=", ">"),
    (r"(?<![<\-])<(?![<=])", "<="), (r"(?<![>\-])>(?![>=])", ">="),
    (r"&&", "||"), (r"\|\|", "&&"),
    (r"(?<=[\w)\]] )\+(?= )", "-"), (r"(?<=[\w)\]] )-(?= )", "+"),
    (r"\+\+", "--"), (r"(?<![\-])--(?!-)", "++"),
    (r"!(?!=)", ""),
    (r"\b0\b", "1"), (r"\b1\b", "0"),
]
LUA_TOKENS = [
    (r"==", "~="), (r"~=", "=="),
    (r"<=", "<"), (r">=", ">"),
    (r"<(?![=<])", "<="), (r"(?<![=~<>])>(?![=>])", ">="),
    (r"\band\b", "or"), (r"\bor\b", "and"),
    (r"\bnot ", ""),
    (r"\btrue\b", "false"), (r"\bfalse\b", "true"),
    (r"(?<=[\w)\]] )\+(?= )", "-"), (r"(?<=[\w)\]] )-(?= )", "+"),
    (r"(?<![\w.])0(?![\w.])", "1"), (r"(?<![\w.])1(?![\w.])", "0"),
]
C_KEYWORDS = ("return", "if", "else", "while", "for", "switch", "case", "do", "goto", "break", "continue")
LUA_KEYWORDS = ("local", "return", "if", "elseif", "else", "while", "for", "repeat", "until",
                "function", "end", "do", "then", "goto", "break")


def matching_paren(s, open_at):
    depth = 0
    for j in range(open_at, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


def line_mutants(line, masked, lang):
    """(description, new line) for each mutant of one line."""
    out = []
    stripped = masked.strip()
    if not stripped or lang == "c" and (stripped.startswith("#") or stripped.startswith("*")):
        return out
    for pat, rep in (C_TOKENS if lang == "c" else LUA_TOKENS):
        for m in re.finditer(pat, masked):
            new = line[:m.start()] + rep + line[m.end():]
            out.append(("'%s' -> '%s'" % (m.group(0), rep), new))
    # conditions: negated
    if lang == "c":
        for m in re.finditer(r"\b(if|while)\s*\(", masked):
            o = m.end() - 1
            c = matching_paren(masked, o)
            if c > 0 and not masked[o + 1:c].lstrip().startswith("!"):
                out.append(("condition negated", line[:o + 1] + "!(" + line[o + 1:c] + ")" + line[c:]))
    else:
        m = re.search(r"\b(if|elseif|while)\s+(.*?)\s+then\b", masked)
        if m and not m.group(2).startswith("not "):
            a, b = m.start(2), m.end(2)
            out.append(("condition negated", line[:a] + "not (" + line[a:b] + ")" + line[b:]))
    # returned values
    if lang == "c":
        m = re.match(r"^(\s*)return\s+(.+);\s*$", masked)
        if m and m.group(2).strip() not in ("0", "NULL"):
            out.append(("return 0", line[:m.end(1)] + "return 0;"))
    else:
        m = re.match(r"^(\s*)return\s+(.+?)\s*$", masked)
        if m and m.group(2) not in ("nil", "end") and not m.group(2).endswith(" end"):
            out.append(("return nil", line[:m.end(1)] + "return nil"))
    # deleted calls: a statement that is only a call
    if lang == "c":
        m = re.match(r"^(\s*)([A-Za-z_][\w.\->]*)\s*\(.*\);\s*$", masked)
        if m and m.group(2) not in C_KEYWORDS:
            out.append(("call deleted", m.group(1) + ";"))
    else:
        m = re.match(r"^(\s*)([A-Za-z_][\w.:\[\]]*)\s*[({\"'].*[)}\"']\s*$", masked)
        if m and m.group(2).split(".")[0].split(":")[0] not in LUA_KEYWORDS and "=" not in masked.split("(")[0]:
            out.append(("call deleted", m.group(1) + "do end"))
    return out


def function_ranges(lines, names, lang):
    """Line ranges (1-based) of the named top-level functions."""
    out, start = [], None
    for i, line in enumerate(lines):
        if start is None:
            if lang == "c":
                m = re.match(r"^[A-Za-z_][\w\s\*]*?\b(\w+)\s*\(", line)
                hit = m and not line.rstrip().endswith(";") and m.group(1) in names
            else:
                m = re.match(r"^(?:local\s+)?function\s+([\w.:]+)\s*\(", line)
                hit = m and (m.group(1) in names or re.split(r"[.:]", m.group(1))[-1] in names)
            if hit:
                start = i + 1
        elif line.startswith("}" if lang == "c" else "end"):
            out.append((start, i + 1))
            start = None
    return out


def mutants(path, ranges):
    lang = "c" if path.endswith((".c", ".h")) else "lua"
    lines = open(path, encoding="utf-8").read().split("\n")
    out, in_comment = [], False
    for i, line in enumerate(lines):
        if ranges and not any(a <= i + 1 <= b for a, b in ranges):
            continue
        s = line.strip()
        if lang == "c":
            if in_comment:
                in_comment = "*/" not in s
                continue
            if s.startswith("/*") and "*/" not in s:
                in_comment = True
                continue
        elif s.startswith("--"):
            continue
        masked = mask_strings(line, lang)
        for what, new in line_mutants(line, masked, lang):
            if new != line:
                out.append({"line": i + 1, "what": what, "old": line, "new": new})
    return lines, out


# ---- the scratch tree ------------------------------------------------------


def sh(cmd, cwd, timeout=None, env=None, quiet=True):
    try:
        r = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), env=env, timeout=timeout,
                           stdout=subprocess.PIPE if quiet else None,
                           stderr=subprocess.STDOUT if quiet else None)
        return r.returncode, (r.stdout or b"").decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode(errors="replace") if quiet else ""


def prepare(work, need_node):
    src, build = os.path.join(work, "src"), os.path.join(work, "build")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           stdout=subprocess.PIPE).stdout.decode().split("\0")
    for f in files:
        if not f or not os.path.isfile(os.path.join(ROOT, f)):
            continue
        dst = os.path.join(src, f)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst) or open(dst, "rb").read() != open(os.path.join(ROOT, f), "rb").read():
            shutil.copy2(os.path.join(ROOT, f), dst)
    print("mutate: configuring and building %s" % build, flush=True)
    rc, out = sh(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], ROOT)
    if rc != 0:
        sys.exit("mutate: cmake failed:\n" + out)
    rc, out = sh(["cmake", "--build", build, "-j2"], ROOT)
    if rc != 0:
        sys.exit("mutate: build failed:\n" + out)
    clients = os.path.join(src, "spec", "clients")
    if need_node and not os.path.isdir(os.path.join(clients, "node_modules")):
        rc, out = sh("npm ci --no-audit --no-fund --loglevel=error", clients)
        if rc != 0:
            sys.exit("mutate: npm ci failed:\n" + out)
    return src, build


def busted_cmd(src, build, spec):
    spec, _, flt = spec.partition("::")
    busted = shutil.which("busted") or "busted"
    cmd = ["lua5.4", busted, "-o", "TAP", spec]
    if flt:
        cmd += ["--filter", flt]
    env = dict(os.environ,
               LUA_PATH="%s/scripts/?.lua;%s/scripts/?/init.lua;%s/spec/?.lua;;" % (src, src, src),
               LUA_CPATH="%s/lua/lua5.4/?.so;;" % build)
    return cmd, env


def run_tests(src, build, tests, timeout):
    """None if every test passed, else the first that failed."""
    for kind, what in tests:
        if kind == "ctest":
            rc, _ = sh(["ctest", "--test-dir", build, "-R", what, "--stop-on-failure",
                        "--timeout", str(int(timeout))], src, timeout=timeout + 30)
        else:
            cmd, env = busted_cmd(src, build, what)
            rc, _ = sh(cmd, src, timeout=timeout, env=env)
        if rc != 0:
            return "%s %s (%s)" % (kind, what, "timeout" if rc == "timeout" else "failed")
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--ctest", action="append", default=[])
    ap.add_argument("--busted", action="append", default=[])
    ap.add_argument("--target", action="append", default=[])
    ap.add_argument("--lines")
    ap.add_argument("--functions")
    ap.add_argument("--sample", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()

    rel = os.path.relpath(os.path.abspath(a.file), ROOT)
    ranges = []
    for part in (a.lines or "").split(","):
        if part:
            lo, _, hi = part.partition("-")
            ranges.append((int(lo), int(hi or lo)))
    if a.functions:
        names = a.functions.split(",")
        text = open(os.path.join(ROOT, rel), encoding="utf-8").read().split("\n")
        found = function_ranges(text, names, "c" if rel.endswith((".c", ".h")) else "lua")
        if len(found) < len(names):
            sys.exit("mutate: not every function of --functions was found in " + rel)
        ranges += found
    lines, ms = mutants(os.path.join(ROOT, rel), ranges)
    total = len(ms)
    if a.sample and a.sample < total:
        ms = sorted(random.Random(a.seed).sample(ms, a.sample), key=lambda m: m["line"])
    if a.list:
        for m in ms:
            print("%s:%d: %s\n  - %s\n  + %s" % (rel, m["line"], m["what"], m["old"].strip(), m["new"].strip()))
        print("%d mutants%s" % (len(ms), " (sample of %d)" % total if len(ms) < total else ""))
        return
    # busted specs are quick: they run first
    tests = [("busted", t) for t in a.busted] + [("ctest", t) for t in a.ctest]
    if not tests:
        sys.exit("mutate: give the tests to run (--ctest REGEX, --busted SPEC)")
    is_c = rel.endswith((".c", ".h"))
    targets = a.target or ["sluice_lua_lua5_4"]

    work = os.environ.get("SLUICE_MUTATE_DIR") or os.path.join(ROOT, "build-mutate")
    src, build = prepare(work, bool(a.ctest or a.busted))
    target_path = os.path.join(src, rel)
    original = "\n".join(lines)

    def build_it():
        if not is_c:
            return 0
        rc, out = sh(["cmake", "--build", build, "-j2", "--target"] + targets, src)
        return rc

    with open(target_path, "w", encoding="utf-8") as f:
        f.write(original)
    assert build_it() == 0, "the unmutated file does not build"
    t0 = time.time()
    failed = run_tests(src, build, tests, 900)
    base = time.time() - t0
    if failed:
        sys.exit("mutate: the tests fail without any mutant: " + failed)
    timeout = max(60, 3 * base)
    print("mutate: %s: %d mutants%s; tests pass unmutated in %.0f s" % (
        rel, len(ms), " (sample of %d, seed %d)" % (total, a.seed) if len(ms) < total else "", base),
        flush=True)

    results = {"killed": [], "survived": [], "stillborn": []}
    try:
        for k, m in enumerate(ms, 1):
            mutated = list(lines)
            mutated[m["line"] - 1] = m["new"]
            with open(target_path, "w", encoding="utf-8") as f:
                f.write("\n".join(mutated))
            if build_it() != 0:
                verdict, why = "stillborn", "does not build"
            else:
                why = run_tests(src, build, tests, timeout)
                verdict = "killed" if why else "survived"
            results[verdict].append(m)
            m["why"] = why
            print("[%d/%d] %s:%d %s: %s%s" % (k, len(ms), rel, m["line"], m["what"], verdict,
                                             " by " + why if verdict == "killed" else ""), flush=True)
    finally:
        with open(target_path, "w", encoding="utf-8") as f:
            f.write(original)
        build_it()

    killed, survived = len(results["killed"]), len(results["survived"])
    score = 100.0 * killed / max(1, killed + survived)
    lines_out = ["%s: %d killed, %d survived, %d not compiling; score %.0f%% (%d of %d mutants%s)" % (
        rel, killed, survived, len(results["stillborn"]), score, len(ms), total,
        ", sample seed %d" % a.seed if len(ms) < total else "")]
    lines_out.append("command: tools/mutate.py " + " ".join(sys.argv[1:]))
    for m in results["survived"]:
        lines_out.append("SURVIVED %s:%d %s\n  - %s\n  + %s" % (rel, m["line"], m["what"],
                                                                m["old"].strip(), m["new"].strip()))
    report = "\n".join(lines_out)
    print(report)
    os.makedirs(os.path.join(work, "results"), exist_ok=True)
    with open(os.path.join(work, "results", rel.replace("/", "_") + ".txt"), "w") as f:
        f.write(report + "\n")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
