// Package registry is the ground's OCI registry: go-containerregistry's registry on loopback, its
// blobs on disk, holding the operator's image (pushed from `make image`'s OCI layout) so that the
// chart and the Jobs refer to it by digest and the node pulls it like a kubelet would.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	gcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is a running registry.
type Registry struct {
	Host   string // 127.0.0.1:PORT
	server *http.Server
}

// Start serves a registry on 127.0.0.1:port with its blobs under dir.
func Start(dir string, port int) (*Registry, error) {
	blobs := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	quiet := log.New(discard{}, "", 0)
	handler := gcrregistry.New(gcrregistry.WithBlobHandler(gcrregistry.NewDiskBlobHandler(blobs)), gcrregistry.Logger(quiet))
	r := &Registry{Host: ln.Addr().String(), server: &http.Server{Handler: handler}}
	go func() {
		if err := r.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("registry: %v", err)
		}
	}()
	return r, nil
}

// Stop closes the registry.
func (r *Registry) Stop() { _ = r.server.Close() }

// PushLayout pushes the first image of an OCI image layout to HOST/repository:tag and returns
// the manifest's digest, which is the layout's own: the same bytes are pushed.
func (r *Registry) PushLayout(ctx context.Context, layoutDir, repository, tag string) (string, error) {
	index, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		return "", fmt.Errorf("failed to read the image layout %s: %w", layoutDir, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(manifest.Manifests) == 0 {
		return "", fmt.Errorf("the image layout %s holds no image", layoutDir)
	}
	img, err := index.Image(manifest.Manifests[0].Digest)
	if err != nil {
		return "", err
	}
	ref, err := name.NewTag(fmt.Sprintf("%s/%s:%s", r.Host, repository, tag))
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("failed to push %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	return digest.String(), nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
