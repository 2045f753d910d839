#!/usr/bin/env bash
# Owns: the whole StageX mission on one machine, end to end, with nothing
# borrowed from outside 127.0.0.1:
#   set up (system peers, release build) -> start a docker-registry (TLS, own
#   CA, htpasswd) and nginx (TLS, WebDAV PUT, basic auth) -> build the native
#   packages -> two throwaway maintainer keys sign them -> publish (quorum
#   gate, push, signatures to the mirror) -> compose a pallet FROM the
#   registry, verifying its inputs' signatures through the mirror -> sign and
#   publish the pallet (its package layers are mounted, not uploaded) ->
#   pull everything back with skopeo under a signedBy policy -> say where
#   everything is -> stop what it started.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new /tmp/stagex-demo.XXXXXX)
#   STAGEX=path/to/stagex uses that binary instead of a release build.
#   STAGEX_DEMO_KEEP=1 leaves the servers running (their pids are printed).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=2026.03.0
say() { printf '\n==> %s\n' "$*"; }

# --- setup ------------------------------------------------------------------
PATH="$PATH:/usr/sbin:/sbin"
need=(docker-registry nginx openssl skopeo gpg python3 curl jq htpasswd)
missing=()
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing the system peers (missing: ${missing[*]})"
  bash "$REPO/.ci/setup"
fi
if [ -z "${STAGEX:-}" ]; then
  STAGEX="$REPO/target/release/stagex"
  if [ ! -x "$STAGEX" ] || [ -n "$(find "$REPO/src" "$REPO/Cargo.toml" -newer "$STAGEX" -print -quit)" ]; then
    say "building stagex (release)"
    (cd "$REPO" && cargo build --release --quiet)
  fi
fi

WORK=${1:-$(mktemp -d /tmp/stagex-demo.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
SRV="$WORK/servers"
mkdir -p "$SRV"/{registry,nginx/tmp,mirror,tls} "$WORK/keys" "$WORK/secret"
cp -r "$REPO/packages" "$WORK/packages"
export STAGEX_STORE="$WORK/store"

PIDS=()
GPG_HOMES=()
cleanup() {
  if [ "${STAGEX_DEMO_KEEP:-0}" = 1 ]; then
    say "servers left running (STAGEX_DEMO_KEEP=1): kill ${PIDS[*]:-}"
  else
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  fi
  for home in "${GPG_HOMES[@]:-}"; do
    [ -n "$home" ] && gpgconf --homedir "$home" --kill gpg-agent 2>/dev/null || true
  done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # URL EXPECTED-STATUS PID LOG
  for _ in $(seq 1 200); do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "stagex demo: the server for $1 exited; its log ($4) ends with:" >&2
      tail -n 20 "$4" >&2
      return 1
    fi
    code=$(curl -s --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' --cacert "$SRV/tls/ca.crt" "$1" || true)
    [ "$code" = "$2" ] && return 0
    sleep 0.05
  done
  echo "stagex demo: $1 never answered $2; see $4" >&2
  return 1
}

# --- one CA for both servers ----------------------------------------------
say "making a throwaway CA and a certificate for 127.0.0.1 ($SRV/tls)"
(
  cd "$SRV/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj /CN=stagex-demo-CA -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
    -days 2 -extfile server.ext 2>/dev/null
)

# --- registry: TLS + htpasswd ------------------------------------------------
REG_PORT=$(free_port)
REG="127.0.0.1:$REG_PORT"
REG_USER=releaser
REG_PASS=$(openssl rand -hex 12)
htpasswd -Bbn "$REG_USER" "$REG_PASS" > "$SRV/registry/htpasswd"
cat > "$SRV/registry/config.yml" <<YAML
version: 0.1
log: {level: warn, formatter: text}
storage: {filesystem: {rootdirectory: $SRV/registry/data}}
http: {addr: $REG, tls: {certificate: $SRV/tls/server.crt, key: $SRV/tls/server.key}}
auth: {htpasswd: {realm: stagex-demo, path: $SRV/registry/htpasswd}}
YAML
say "starting docker-registry on https://$REG (log: $SRV/registry/registry.log)"
docker-registry serve "$SRV/registry/config.yml" > "$SRV/registry/registry.log" 2>&1 &
PIDS+=($!)
wait_for "https://$REG/v2/" 401 "${PIDS[-1]}" "$SRV/registry/registry.log"

# --- nginx: TLS + WebDAV PUT + basic auth ------------------------------------
NGX_PORT=$(free_port)
MIRROR="https://127.0.0.1:$NGX_PORT"
DAV_USER=uploader
DAV_PASS=$(openssl rand -hex 12)
printf '%s:%s\n' "$DAV_USER" "$(openssl passwd -apr1 "$DAV_PASS")" > "$SRV/nginx/htpasswd"
T="$SRV/nginx/tmp"
cat > "$SRV/nginx/nginx.conf" <<NGINX
daemon off; master_process off; pid $SRV/nginx/nginx.pid; error_log $SRV/nginx/error.log;
events { worker_connections 256; }
http { access_log $SRV/nginx/access.log;
  client_body_temp_path $T/body; proxy_temp_path $T/proxy; fastcgi_temp_path $T/fcgi;
  uwsgi_temp_path $T/uwsgi; scgi_temp_path $T/scgi;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$NGX_PORT ssl;
    ssl_certificate $SRV/tls/server.crt; ssl_certificate_key $SRV/tls/server.key;
    root $SRV/mirror;
    location / { dav_methods PUT; create_full_put_path on; dav_access user:rw group:r all:r;
      client_max_body_size 16m;
      limit_except GET HEAD { auth_basic "stagex mirror"; auth_basic_user_file $SRV/nginx/htpasswd; } } } }
NGINX
say "starting nginx (WebDAV signature mirror) on $MIRROR (root: $SRV/mirror)"
nginx -p "$SRV/nginx" -e "$SRV/nginx/error.log" -c "$SRV/nginx/nginx.conf" &
PIDS+=($!)
wait_for "$MIRROR/absent" 404 "${PIDS[-1]}" "$SRV/nginx/error.log"

# --- the release manager's environment --------------------------------------
export STAGEX_CA_FILE="$SRV/tls/ca.crt"
export STAGEX_TLS_HOSTS="$REG"
export STAGEX_REGISTRY_USER="$REG_USER" STAGEX_REGISTRY_PASSWORD="$REG_PASS" STAGEX_REGISTRY_HOSTS="$REG"
export STAGEX_MIRROR_USER="$DAV_USER" STAGEX_MIRROR_PASSWORD="$DAV_PASS"
NS="$REG/stagex"
cat > "$WORK/stagex.toml" <<TOML
threshold = 2
namespace = "$NS"
lookaside = "signatures"

[publish]
registries = ["$NS"]
mirrors = ["$MIRROR"]
TOML
sx() { "$STAGEX" --root "$WORK" "$@"; }

# --- build ------------------------------------------------------------------
say "building the native packages into $WORK/out"
sx build core-filesystem core-profile
sx digests

# --- two maintainers ---------------------------------------------------------
for who in alice bob; do
  home=$(mktemp -d /tmp/stagex-demo-gpg.XXXXXX)
  GPG_HOMES+=("$home")
  printf '%%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: %s (demo maintainer)\nName-Email: %s@stagex-demo.invalid\nExpire-Date: 1d\n%%commit\n' "$who" "$who" > "$home/params"
  GNUPGHOME="$home" gpg --batch --quiet --gen-key "$home/params" 2>/dev/null
  fpr=$(GNUPGHOME="$home" gpg --batch --with-colons --list-secret-keys | awk -F: '/^fpr/ {print $10; exit}')
  GNUPGHOME="$home" gpg --batch --export "$fpr" > "$WORK/keys/$who.gpg"
  GNUPGHOME="$home" gpg --batch --export-secret-keys "$fpr" > "$WORK/secret/$who.key"
  say "maintainer $who: key $fpr"
done

sign_all() {
  for who in alice bob; do sx sign --key "$WORK/secret/$who.key"; done
  sx verify
}

# --- publish the packages ----------------------------------------------------
say "signing every package with both keys, verifying the quorum"
sign_all
say "publishing release $RELEASE: gate, push to $NS, signatures to $MIRROR"
sx publish --release "$RELEASE"

# --- a pallet composed from the registry, inputs verified through the mirror --
say "composing a pallet from $NS (each input's signatures checked on $MIRROR)"
sx pallet core-filesystem+core-profile --source "$NS" --lookaside "$MIRROR" \
  --output "oci:$WORK/out/pallet-demo:$RELEASE"
sx digests
say "signing and publishing the pallet (its package layers mount, they are not uploaded)"
sign_all
sx publish --release "$RELEASE"

# --- pull everything back under a signedBy policy -----------------------------
say "pulling back with skopeo under a signedBy policy"
sx policy --out "$WORK/pull" --registry "$NS" --lookaside "$MIRROR"
mkdir -p "$WORK/pull/certs"
cp "$SRV/tls/ca.crt" "$WORK/pull/certs/ca.crt"
cat "$WORK"/digests/*.txt | while read -r hex name; do
  version=$(jq -r '.manifests[0].annotations["org.opencontainers.image.ref.name"] // empty' "$WORK/out/$name/index.json")
  ref="$NS/$name:$version"
  skopeo --policy "$WORK/pull/policy.json" --registries.d "$WORK/pull/registries.d" \
    copy --quiet --remove-signatures --src-cert-dir "$WORK/pull/certs" \
    --src-creds "$REG_USER:$REG_PASS" "docker://$ref" "oci:$WORK/pull/$name:$version"
  echo "verified and pulled $ref (manifest sha256:$hex) -> $WORK/pull/$name"
done

say "done. Where everything is:"
cat <<EOF2
  work tree          $WORK  (stagex.toml, packages/, out/, digests/, keys/, signatures/)
  registry           https://$REG  (user $REG_USER, password $REG_PASS; data $SRV/registry/data)
  signature mirror   $MIRROR  (files in $SRV/mirror)
  trusted keys       $WORK/keys  (secret keys in $WORK/secret)
  skopeo policy      $WORK/pull/policy.json  with  $WORK/pull/registries.d  (written by stagex policy)
  pulled images      $WORK/pull/<image>
  publish journal    $WORK/.stagex/publish-journal.json
EOF2
