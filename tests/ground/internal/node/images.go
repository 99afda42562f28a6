package node

// Images pulled from a registry, as a kubelet's runtime pulls them: resolved to a manifest digest,
// each digest's layers unpacked once into a root filesystem that containers mount read-only
// under an overlay of their own.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
)

// pulledImage is an image on the node: its unpacked root filesystem and its config.
type pulledImage struct {
	Digest string
	Rootfs string
	Config v1.Config
}

type imageStore struct {
	dir  string
	mu   sync.Mutex
	refs map[string]string // reference as written in a pod -> manifest digest
	// One lock per digest: two pods of the same image unpack it once.
	unpacking map[string]*sync.Mutex
}

func newImageStore(dir string) *imageStore {
	return &imageStore{dir: dir, refs: map[string]string{}, unpacking: map[string]*sync.Mutex{}}
}

// pull makes image available under policy (Always, IfNotPresent, Never; by Kubernetes' default,
// Always for :latest or no tag, else IfNotPresent).
func (s *imageStore) pull(ctx context.Context, image string, policy corev1.PullPolicy) (*pulledImage, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", image, err)
	}
	if policy == "" {
		policy = corev1.PullIfNotPresent
		if t, ok := ref.(name.Tag); ok && t.TagStr() == "latest" {
			policy = corev1.PullAlways
		}
	}
	s.mu.Lock()
	digest, known := s.refs[image]
	s.mu.Unlock()
	if d, ok := ref.(name.Digest); ok {
		digest, known = d.DigestStr(), known || s.present(d.DigestStr())
	}
	switch {
	case policy == corev1.PullNever && !known:
		return nil, errNeverPull{image}
	case policy == corev1.PullAlways || !known:
		// A pull asks the registry every time (even for a digest: it must still be there).
		desc, err := remote.Head(ref, remote.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("failed to pull image %q: %w", image, err)
		}
		digest = desc.Digest.String()
	}
	if err := s.unpack(ctx, ref.Context().Digest(digest), digest); err != nil {
		return nil, fmt.Errorf("failed to pull image %q: %w", image, err)
	}
	s.mu.Lock()
	s.refs[image] = digest
	s.mu.Unlock()
	return s.load(digest)
}

type errNeverPull struct{ image string }

func (e errNeverPull) Error() string {
	return fmt.Sprintf("container image %q is not present with pull policy of Never", e.image)
}

func (s *imageStore) digestDir(digest string) string {
	return filepath.Join(s.dir, strings.ReplaceAll(digest, ":", "-"))
}

func (s *imageStore) present(digest string) bool {
	_, err := os.Stat(filepath.Join(s.digestDir(digest), "config.json"))
	return err == nil
}

func (s *imageStore) load(digest string) (*pulledImage, error) {
	dir := s.digestDir(digest)
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	img := &pulledImage{Digest: digest, Rootfs: filepath.Join(dir, "rootfs")}
	return img, json.Unmarshal(data, &img.Config)
}

// unpack writes the image's layers, in order, into DIGEST/rootfs, then its config, which marks
// the image present. tar (as root, numeric owners, modes kept) lays out each layer: the images
// the ground runs are single-layer, without whiteouts.
func (s *imageStore) unpack(ctx context.Context, ref name.Digest, digest string) error {
	s.mu.Lock()
	lock, ok := s.unpacking[digest]
	if !ok {
		lock = &sync.Mutex{}
		s.unpacking[digest] = lock
	}
	s.mu.Unlock()
	lock.Lock()
	defer lock.Unlock()
	if s.present(digest) {
		return nil
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	config, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	dir := s.digestDir(digest)
	rootfs := filepath.Join(dir, "rootfs")
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	for _, layer := range layers {
		if err := untar(layer, rootfs); err != nil {
			return err
		}
	}
	data, err := json.Marshal(config.Config)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644)
}

func untar(layer v1.Layer, dir string) error {
	rc, err := layer.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	cmd := exec.Command("tar", "-x", "--numeric-owner", "--same-permissions", "--same-owner", "-C", dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	_, copyErr := io.Copy(stdin, rc)
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("failed to unpack a layer: %v: %s", err, stderr.String())
	}
	return copyErr
}
