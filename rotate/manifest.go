package rotate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"regexp"
)

// StorageManifestFlag is a static pod manifest of which certagent edits
// one file flag (a CA rotation points the controller manager's
// --cluster-signing-cert-file at a one-certificate signer file and back).
// It holds no certificate: the codec checks that the file names the flag
// exactly once.
const StorageManifestFlag Storage = "manifest-flag"

func init() { codecs[StorageManifestFlag] = manifestCodec{} }

// manifestCodec reads a static pod manifest whose flag is edited; the
// flag is in Target.User (a manifest has no user).
type manifestCodec struct{}

func (manifestCodec) files(t Target) []string { return []string{t.CertPath} }

func (manifestCodec) decode(t Target, data map[string][]byte) (decoded, error) {
	if _, err := FlagValue(data[t.CertPath], t.User); err != nil {
		return decoded{}, &partError{err: fmt.Errorf("%s: %w", t.CertPath, err)}
	}
	return decoded{}, nil
}

func (manifestCodec) encode(t Target, _ *current, _ []*x509.Certificate, _ crypto.Signer) ([]newFile, error) {
	return nil, fmt.Errorf("%s: a manifest is edited, not renewed", t.Name)
}

func (manifestCodec) fromJournal(t Target, paths []string) Target { return firstPath(t, paths) }

// flagRE finds "--name=value" as a static pod manifest's list item or in
// a command string: the value runs to a quote, a blank or the line's end.
func flagRE(name string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[\s"'])` + regexp.QuoteMeta("--"+name+"=") + `([^\s"']+)`)
}

// FlagValue returns the value of the file flag --name= in a manifest;
// absent or given more than once is an error.
func FlagValue(manifest []byte, name string) (string, error) {
	if name == "" {
		return "", errors.New("no flag named")
	}
	m := flagRE(name).FindAllSubmatch(manifest, -1)
	switch len(m) {
	case 0:
		return "", fmt.Errorf("no --%s=", name)
	case 1:
		return string(m[0][2]), nil
	}
	return "", fmt.Errorf("--%s= given %d times", name, len(m))
}

// FlagEdit is a file flag of a static pod manifest pointed at another
// file of the same directory.
type FlagEdit struct {
	Name string
	// Path is the manifest (a node path).
	Path string
	// Flag is the flag's name without dashes; From and To are the base
	// names of the file it names before and after.
	Flag, From, To string
	// Dir, when set, is the directory the file must be in: a file of the
	// same name elsewhere is not certagent's to re-point.
	Dir string
}

// Edit renders the manifest with the flag's file changed; unchanged
// (nil) when it already names To. Any other value is an error: certagent
// edits only what it expects.
func (e FlagEdit) Edit(manifest []byte) ([]byte, error) {
	v, err := FlagValue(manifest, e.Flag)
	if err != nil {
		return nil, err
	}
	if e.Dir != "" && path.Dir(path.Clean(v)) != e.Dir {
		return nil, fmt.Errorf("--%s=%s: expected a file in %s", e.Flag, v, e.Dir)
	}
	switch path.Base(v) {
	case e.To:
		return nil, nil
	case e.From:
	default:
		return nil, fmt.Errorf("--%s=%s: expected a file named %s or %s", e.Flag, v, e.From, e.To)
	}
	nv := path.Join(path.Dir(v), e.To)
	out := flagRE(e.Flag).ReplaceAllFunc(manifest, func(m []byte) []byte {
		return bytes.Replace(m, []byte("="+v), []byte("="+nv), 1)
	})
	if got, err := FlagValue(out, e.Flag); err != nil || got != nv || len(out) != len(manifest)-len(v)+len(nv) {
		return nil, fmt.Errorf("--%s: the edit did not give %s", e.Flag, nv)
	}
	return out, nil
}

// EditFlags applies flag edits to static pod manifests in one
// transaction, each file keeping its mode and owner. It returns the
// names of the manifests it changed and the transaction's backup
// directory.
func EditFlags(ctx context.Context, opts Options, edits []FlagEdit) ([]string, string, error) {
	opts = opts.withDefaults()
	var ps []*prepared
	var names []string
	for _, e := range edits {
		p, err := prepareFlag(opts, e)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", e.Path, err)
		}
		if p != nil {
			ps, names = append(ps, p), append(names, e.Name)
		}
	}
	if len(ps) == 0 || ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	dir, err := runTx(opts, ps)
	Prune(opts.Root, opts.BackupDir, opts.KeepBackups)
	for _, p := range ps {
		if err == nil {
			err = p.err
		}
	}
	return names, dir, err
}

// prepareFlag renders one flag edit; nil when there is nothing to do.
func prepareFlag(opts Options, e FlagEdit) (*prepared, error) {
	t := Target{Name: e.Name, Storage: StorageManifestFlag, CertPath: e.Path, User: e.Flag}
	cur, err := load(opts.Root, t)
	if err != nil {
		return nil, err
	}
	f := cur.files[e.Path]
	data, err := e.Edit(f.Data)
	if err != nil || data == nil {
		return nil, err
	}
	return &prepared{t: t, cur: cur, files: []newFile{cur.file(e.Path, data, f.Mode)}}, nil
}
