package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/rotate/pki"
)

// GroupName is the group whose members may read the status API.
const GroupName = "certagent"

// Roles a caller can have on the socket.
type role int

const (
	roleNone   role = iota
	roleReader      // member of the certagent group: read-only queries
	roleAdmin       // root: everything
)

type peerKey struct{}

// peer is the caller on the other end of the socket, from SO_PEERCRED.
type peer struct {
	pid, uid, gid int
	role          role
}

// serve listens on the unix socket and serves the API in the background.
func (a *Agent) serve() (*http.Server, error) {
	ln, gid, err := listen(a.opts.Socket, a.opts.Group)
	if err != nil {
		return nil, err
	}
	a.socket, _ = os.Lstat(a.opts.Socket)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/status", a.handleStatus)
	mux.HandleFunc("/v1/rescan", a.handleRescan)
	mux.HandleFunc("/v1/renew", a.handleRenew)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint; try /v1/status")
	})
	srv := &http.Server{
		Handler: mux,
		// A slow or stuck client holds only its own connection.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      3 * time.Minute, // a renewal may wait a minute for the lock
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, identify(c, gid))
		},
		ErrorLog: nil,
	}
	go srv.Serve(ln)
	return srv, nil
}

// listen creates the socket: mode 0660 and the given group when it exists,
// else 0600 (root only). A stale socket is replaced; anything else at the
// path is an error and left alone. Closing the listener does not unlink
// the path (whatever may be there by then): see removeSocket.
func listen(p, group string) (net.Listener, int, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, -1, fmt.Errorf("socket: %w", err)
	}
	if err := removeStaleSocket(p); err != nil {
		return nil, -1, err
	}
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, -1, fmt.Errorf("socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	gid, mode := -1, os.FileMode(0o600)
	if g, err := user.LookupGroup(group); err == nil {
		if n, err := strconv.Atoi(g.Gid); err == nil && os.Chown(p, os.Geteuid(), n) == nil {
			gid, mode = n, 0o660
		}
	}
	if err := os.Chmod(p, mode); err != nil {
		ln.Close()
		return nil, -1, fmt.Errorf("socket: %w", err)
	}
	return ln, gid, nil
}

// removeStaleSocket clears the way for a new socket at p: nothing there is
// fine; a socket nobody answers on is removed; a live one means another
// agent runs; anything else (a file, a directory, a link) is an error that
// names it, so that --socket can never delete a file.
func removeStaleSocket(p string) error {
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("socket %s: the path holds %s, not a socket: refusing to replace it (remove it, or choose another socket path)", p, pki.FileType(fi.Mode()))
	}
	if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another certagent is running", p)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("socket: remove stale socket: %w", err)
	}
	return nil
}

// removeSocket removes the socket at p on shutdown if it is still the one
// this agent created (ours), not whatever was put there since.
func removeSocket(p string, ours fs.FileInfo) {
	if fi, err := os.Lstat(p); err == nil && ours != nil && os.SameFile(fi, ours) {
		os.Remove(p)
	}
}

// identify reads the peer's credentials and decides its role.
func identify(c net.Conn, gid int) *peer {
	p := &peer{pid: -1, uid: -1, gid: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return p
	}
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			p.pid, p.uid, p.gid = int(cred.Pid), int(cred.Uid), int(cred.Gid)
		}
	})
	switch {
	case p.uid == 0:
		p.role = roleAdmin
	case gid >= 0 && (p.gid == gid || inGroup(p.pid, gid)):
		p.role = roleReader
	}
	return p
}

// inGroup reads a process's supplementary groups from /proc.
func inGroup(pid, gid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(rest) {
				if g == strconv.Itoa(gid) {
					return true
				}
			}
		}
	}
	return false
}

func callerOf(r *http.Request) *peer {
	if p, ok := r.Context().Value(peerKey{}).(*peer); ok {
		return p
	}
	return &peer{}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// allow checks method and role; it writes the refusal itself.
func allow(w http.ResponseWriter, r *http.Request, method string, need role) (*peer, bool) {
	p := callerOf(r)
	if r.Method != method {
		writeError(w, http.StatusMethodNotAllowed, "use "+method)
		return p, false
	}
	if p.role < need {
		what := "read the status: be root or in group " + GroupName
		if need == roleAdmin {
			what = "change anything: only root may"
		}
		writeError(w, http.StatusForbidden, fmt.Sprintf("uid %d may not %s", p.uid, what))
		return p, false
	}
	return p, true
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	if _, ok := allow(w, r, http.MethodGet, roleReader); !ok {
		return
	}
	doc := a.statusDocument()
	if doc == nil {
		writeError(w, http.StatusServiceUnavailable, "first scan not finished")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(doc.size))
	// Thousands of certificates are tens of thousands of pieces: written
	// through a buffer, in few writes to the socket.
	bw := bufio.NewWriterSize(w, 64<<10)
	doc.WriteTo(bw)
	bw.Flush()
}

func (a *Agent) audit(p *peer, action string, detail any) {
	a.opts.Log.WithFields(logrus.Fields{"CALLER_PID": p.pid, "CALLER_UID": p.uid, "ACTION": action, "REQUEST": fmt.Sprint(detail)}).Info("API request")
}

func (a *Agent) handleRescan(w http.ResponseWriter, r *http.Request) {
	p, ok := allow(w, r, http.MethodPost, roleAdmin)
	if !ok {
		return
	}
	a.audit(p, "rescan", "")
	a.Rescan("rescan request")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	w.Write([]byte(`{"ok":true}` + "\n"))
}

func (a *Agent) handleRenew(w http.ResponseWriter, r *http.Request) {
	p, ok := allow(w, r, http.MethodPost, roleAdmin)
	if !ok {
		return
	}
	var req api.RenewRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "malformed renew request: "+err.Error())
		return
	}
	if req.All == (len(req.Names) > 0) || (req.Force && !req.All) {
		writeError(w, http.StatusBadRequest, "give names or all (with force optionally), not both or neither")
		return
	}
	a.audit(p, "renew", req)
	out, err := a.Renew(r.Context(), req)
	if err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
