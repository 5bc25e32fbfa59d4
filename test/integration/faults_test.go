package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// faultScript runs inside a private mount namespace (unshare -m): it puts
// the node on a small tmpfs, optionally fills it or makes it read-only,
// runs a renewal and records what happened in $res.
const faultScript = `
set -u
mnt=$1 src=$2 bin=$3 res=$4 fault=$5 free=$6
mount -t tmpfs -o size=1m tmpfs "$mnt" || exit 90
cp -a "$src/." "$mnt/"
"$bin" renew --root "$mnt" --all >/dev/null 2>&1   # creates the lock file and backup dir
sums() { (cd "$mnt" && find etc var -type f ! -path 'etc/kubernetes/tmp/*' -exec sha256sum {} + | sort -k2); }
sums >"$res/before"
case $fault in
enospc) dd if=/dev/zero of="$mnt/zz-fill" bs=4k >/dev/null 2>&1; truncate -s -"$free"K "$mnt/zz-fill" ;;
erofs) mount -o remount,ro "$mnt" ;;
esac
"$bin" renew --root "$mnt" --all --force >"$res/out" 2>&1
echo $? >"$res/code"
sums >"$res/after"
(cd "$mnt" && find etc var -name '.*' -type f) >"$res/strays"
[ "$fault" = enospc ] && rm -f "$mnt/zz-fill"
"$bin" check --root "$mnt" -o json >"$res/check.json" 2>&1
`

func requireRootUnshare(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "SKIPPED: fault injection needs root (a private tmpfs via unshare -m)"
		if os.Getenv("CI") == "true" || os.Getenv("CERTAGENT_REQUIRE_INTEGRATION") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare not found (util-linux)")
	}
}

type faultResult struct {
	code                  string
	out, before, after    string
	strays                string
	checkOK               bool
	checkErr, checkOutput string
}

func runFault(t *testing.T, src, fault string, freeKB int) faultResult {
	t.Helper()
	mnt, res := t.TempDir(), t.TempDir()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", faultScript, "fault",
		mnt, src, certagentBin, res, fault, fmt.Sprint(freeKB))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fault script: %v\n%s", err, out)
	}
	read := func(n string) string { b, _ := os.ReadFile(filepath.Join(res, n)); return string(b) }
	fr := faultResult{code: strings.TrimSpace(read("code")), out: read("out"), before: read("before"), after: read("after"), strays: read("strays")}
	fr.checkOutput = read("check.json")
	var rep certagentReport
	if err := json.Unmarshal([]byte(fr.checkOutput), &rep); err != nil {
		fr.checkErr = err.Error()
		return fr
	}
	fr.checkOK = len(rep.Problems) == 0
	for _, c := range rep.Certificates {
		if c.Key == nil || !c.Key.Matches {
			fr.checkOK = false
		}
	}
	return fr
}

// TestNoSpaceLeft: a renewal on a full file system fails with a clear
// error, leaves the originals byte-identical and no temporary files.
func TestNoSpaceLeft(t *testing.T) {
	requireRootUnshare(t)
	src := sandbox(t)
	sawENOSPC := false
	for _, free := range []int{0, 4, 8, 16, 32, 48, 64, 96, 128, 192} {
		t.Run(fmt.Sprintf("free=%dk", free), func(t *testing.T) {
			fr := runFault(t, src, "enospc", free)
			t.Logf("exit %s: %s", fr.code, firstLine(fr.out))
			if fr.code != "0" {
				if !strings.Contains(fr.out, "no space left on device") {
					t.Errorf("exit %s without a clear error:\n%s", fr.code, fr.out)
				}
				sawENOSPC = true
				if fr.before != fr.after {
					t.Errorf("originals changed although the renewal failed:\n%s", fr.out)
				}
			}
			if fr.strays != "" {
				t.Errorf("temporary files left behind:\n%s", fr.strays)
			}
			if !fr.checkOK {
				t.Errorf("node inconsistent afterwards (%s):\n%s", fr.checkErr, fr.checkOutput)
			}
		})
	}
	if !sawENOSPC {
		t.Error("no run hit ENOSPC: the free space steps are too large")
	}
}

// TestReadOnlyFileSystem: the same on a file system remounted read-only.
func TestReadOnlyFileSystem(t *testing.T) {
	requireRootUnshare(t)
	fr := runFault(t, sandbox(t), "erofs", 0)
	if fr.code == "0" || !strings.Contains(fr.out, "read-only file system") {
		t.Errorf("exit %s, want a clear read-only error:\n%s", fr.code, fr.out)
	}
	if fr.before != fr.after || fr.strays != "" || !fr.checkOK {
		t.Errorf("originals changed, strays %q, or inconsistent:\n%s", fr.strays, fr.checkOutput)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
