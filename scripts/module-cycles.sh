#!/usr/bin/env bash
# Owns: the check that the crate's top-level modules (src/<m>.rs or
# src/<m>/) form no dependency cycle. An edge m -> t is any `crate::t`
# path in m's code (comment lines are skipped). Prints every module's
# dependencies, then each cycle found; exits 1 on a cycle, 0 otherwise.
# Usage: scripts/module-cycles.sh [SRC_DIR]   (default: src next to scripts/)
set -euo pipefail

src="${1:-$(dirname "$0")/../src}"
[ -d "$src" ] || { echo "module-cycles: no source directory at $src" >&2; exit 2; }

modules() {
    for entry in "$src"/*; do
        name="$(basename "$entry" .rs)"
        case "$name" in main | lib) continue ;; esac
        echo "$name"
    done | sort -u
}

# The top-level modules one module's code names through `crate::`.
dependencies_of() {
    local module="$1" files=()
    [ -f "$src/$module.rs" ] && files+=("$src/$module.rs")
    [ -d "$src/$module" ] && while IFS= read -r f; do files+=("$f"); done \
        < <(find "$src/$module" -name '*.rs' | sort)
    grep -hv '^[[:space:]]*//' "${files[@]}" \
        | grep -oE 'crate::[a-z_][a-z0-9_]*' \
        | sed 's/^crate:://' | sort -u | grep -vx "$module" || true
}

edges="$(mktemp)"
trap 'rm -f "$edges"' EXIT
while IFS= read -r module; do
    deps="$(dependencies_of "$module" | tr '\n' ' ')"
    echo "$module -> ${deps:-(nothing)}"
    echo "$module $module" >>"$edges"
    for dep in $deps; do echo "$module $dep" >>"$edges"; done
done < <(modules)

# tsort names the modules of every loop it has to break, and fails then.
if ! loops="$(tsort "$edges" 2>&1 >/dev/null)"; then
    echo
    echo "module-cycles: the top-level modules have a dependency cycle:" >&2
    echo "$loops" >&2
    echo "Move the shared item down to the module both sides may depend on." >&2
    exit 1
fi
echo
echo "module-cycles: no cycle between the top-level modules"
