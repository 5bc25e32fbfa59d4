package pki

import "fmt"

// StageLink makes a symbolic link holding target beside name, for Commit
// to rename over name: the way the kubelet swaps its -current.pem. The
// link is made under staged, another entry of d ("" for a temporary name
// like Stage's); whatever is there first is removed (a link itself, never
// what it points to). target is written as given, not interpreted.
func (d *Dir) StageLink(name, staged, target string) (*Pending, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if staged == "" {
		var err error
		if staged, err = tempName(name); err != nil {
			return nil, err
		}
	}
	if err := d.Remove(staged); err != nil {
		return nil, fmt.Errorf("stage %s: %w", d.node(name), err)
	}
	if err := d.Symlink(target, staged); err != nil {
		return nil, fmt.Errorf("stage %s: %w", d.node(name), err)
	}
	return &Pending{dir: d, tmp: staged, final: name}, nil
}

// StageLink opens the directory of nodePath inside the root and stages a
// link to target beside it (see Dir.StageLink); the Pending holds the
// directory open until Cleanup.
func (r *Root) StageLink(nodePath, staged, target string) (*Pending, error) {
	return r.stageIn(nodePath, func(d *Dir, name string) (*Pending, error) { return d.StageLink(name, staged, target) })
}

// WriteLink replaces nodePath with a link to target atomically and
// durably inside the root: a link made under a temporary name, renamed
// over nodePath, the directory synced.
func (r *Root) WriteLink(nodePath, target string) error {
	p, err := r.StageLink(nodePath, "", target)
	if err != nil {
		return err
	}
	defer p.Cleanup()
	if err := p.Commit(); err != nil {
		return fmt.Errorf("replace %s: %w", nodePath, err)
	}
	return p.Sync()
}
