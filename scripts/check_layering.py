#!/usr/bin/env python3
"""Checks that every source folder includes only the folders it may depend on.

The layers, lowest first (docs/architecture.md):
  common <- scheduler <- engine/tokenizer <- engine/model <- engine/generation
  <- engine/runtime <- server/imaging, server/security (TLS, API keys) <- server/grpc <- server/cli
proto is generated code that only the server reaches. tests/ and benchmarks/
may include anything. Usage: check_layering.py [ROOT]; exit 1 on a violation.
"""
import pathlib
import re
import sys

ALLOWED = {
    "common": {"common"},
    "scheduler": {"scheduler"},
    "engine/tokenizer": {"common", "engine/tokenizer"},
    "engine/model": {"common", "engine/tokenizer", "engine/model"},
    "engine/generation": {"common", "engine/tokenizer", "engine/model", "engine/generation"},
    "engine/runtime": {"common", "scheduler", "engine/tokenizer", "engine/model", "engine/generation",
                       "engine/runtime"},
    "server/imaging": {"common", "engine/model", "server/imaging"},
    "server/security": {"common", "server/security", "proto"},
    # grpc/ and http/ are the two fronts of one library: http/ runs its
    # requests through grpc/'s ServiceCore and EngineJob, and grpc/'s
    # Blip2Server (grpc_server.cc) starts the HTTP front.
    "server/grpc": {"common", "engine/tokenizer", "engine/model", "engine/generation", "engine/runtime",
                    "server/imaging", "server/security", "server/grpc", "server/http", "proto"},
    "server/http": {"common", "engine/tokenizer", "engine/model", "engine/generation", "engine/runtime",
                    "server/imaging", "server/security", "server/grpc", "server/http", "proto"},
    "server/cli": {"common", "engine/tokenizer", "engine/model", "engine/generation", "engine/runtime",
                   "server/imaging", "server/security", "server/grpc", "server/http", "server/cli", "proto"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def folder_of(path: str) -> str:
    for folder in sorted(ALLOWED, key=len, reverse=True):
        if path == folder or path.startswith(folder + "/"):
            return folder
    return ""


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    violations = []
    checked = 0
    for source in sorted(root.rglob("*")):
        if source.suffix not in (".h", ".cc", ".cu", ".cuh") or "build" in source.relative_to(root).parts[:1]:
            continue
        rel = source.relative_to(root).as_posix()
        folder = folder_of(rel)
        if not folder:
            continue
        checked += 1
        for header in INCLUDE.findall(source.read_text(errors="replace")):
            if header.endswith(".pb.h"):
                target = "proto"
            else:
                target = folder_of(header)
                if not target:
                    if (root / header).exists() and header.split("/")[0] in ("tests", "benchmarks"):
                        violations.append(f"{rel}: includes {header} (tests and benchmarks are above everything)")
                    continue
            if target not in ALLOWED[folder]:
                violations.append(f"{rel}: includes {header} ({folder} may not depend on {target})")
    for v in violations:
        print(v)
    print(f"{checked} sources checked, {len(violations)} layering violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
