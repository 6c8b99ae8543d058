#!/usr/bin/env python3
"""Where a Go hello world's build time goes, per runtime: in one go-algorithm sandbox (a pool clone), a shell
times /bin/true, `go version`, `go list -deps fmt` (the go command's package loading), `go build` with an
empty and then a filled GOCACHE, and `go tool compile` + `go tool link` called directly, twice.

Usage: bench/go_build_steps.py gvisor,process   (starts each runtime's server as run_latency.py does; prints)
"""
import json, sys, tempfile, urllib.request

from run_latency import serving, wait_for_pools

SCRIPT = r'''
mkdir -p /tmp/w && cd /tmp/w && printf 'package main\nimport "fmt"\nfunc main(){fmt.Println(1)}\n' > main.go
export GOPATH=/tmp/go GO111MODULE=off GOFLAGS=-buildvcs=false CGO_ENABLED=0
t(){ s=$(date +%s%N); "$@" >/dev/null 2>&1; rc=$?; e=$(date +%s%N); echo "$(( (e-s)/1000000 )) ms rc=$rc: $*"; }
R=$(go env GOROOT)/pkg/linux_amd64
for i in 1 2; do
t /bin/true
t go version
t env GOCACHE=/tmp/c$i go list -deps fmt
t env GOCACHE=/tmp/b$i go build -o main$i main.go
t env GOCACHE=/tmp/b$i go build -o main$i-again main.go
t go tool compile -o m$i.o -p main -I $R main.go
t go tool link -o m$i -L $R m$i.o
t ./m$i
done
'''

def call(url, method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r) if r.status != 204 else None

for runtime in sys.argv[1].split(","):
    with serving(runtime, tempfile.mkdtemp(prefix="sandboxvm-goprobe-")) as url:
        wait_for_pools(url, ["go-algorithm"])
        sb = call(url, "POST", "/v1/sandboxes", {"template": "go-algorithm"})
        try:
            c = call(url, "POST", f"/v1/sandboxes/{sb['id']}/commands", {"cmd": ["sh", "-c", SCRIPT], "timeout_s": 110})
            print(f"== {runtime}\n{c['stdout']}{c['stderr']}", flush=True)
        finally:
            call(url, "DELETE", f"/v1/sandboxes/{sb['id']}")
