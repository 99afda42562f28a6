// oci-image writes the operator's OCI image (layout and tarball) from one prepared root filesystem
// layer, with go-containerregistry (crane's library), so `make image` needs no Docker engine and no
// registry. Every input is explicit, so the same inputs give the same digest.
package main

import (
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var labels, env, entrypoint list
	layerPath := flag.String("layer", "", "uncompressed tar of the root filesystem")
	created := flag.Int64("created", -1, "creation time, seconds since the epoch (SOURCE_DATE_EPOCH)")
	user := flag.String("user", "", "config User")
	workdir := flag.String("workdir", "/", "config WorkingDir")
	createdBy := flag.String("created-by", "", "history entry: what made the layer")
	tag := flag.String("tag", "", "reference recorded in the tarball and the layout's index")
	layoutDir := flag.String("layout", "", "OCI image layout directory to write (must not exist)")
	tarPath := flag.String("tarball", "", "docker save-style tarball to write (docker load); pushed, it becomes a Docker manifest with another digest")
	flag.Var(&labels, "label", "KEY=VALUE: a config label and manifest annotation (repeatable)")
	flag.Var(&env, "env", "KEY=VALUE: config Env (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "config Entrypoint element (repeatable)")
	flag.Parse()
	if *layerPath == "" || *created < 0 || *tag == "" || *layoutDir == "" || *tarPath == "" {
		flag.Usage()
		os.Exit(2)
	}
	digest, err := build(*layerPath, time.Unix(*created, 0).UTC(), *user, *workdir, *createdBy, *tag,
		*layoutDir, *tarPath, labels, env, entrypoint)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oci-image:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

func build(layerPath string, created time.Time, user, workdir, createdBy, tag, layoutDir, tarPath string,
	labels, env, entrypoint []string) (string, error) {
	ref, err := name.NewTag(tag)
	if err != nil {
		return "", err
	}
	anns := map[string]string{}
	for _, kv := range labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", fmt.Errorf("label %q is not KEY=VALUE", kv)
		}
		anns[k] = v
	}
	// Cached: the layer is compressed once, not once per digest and per output.
	layer, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.DefaultCompression), tarball.WithCompressedCaching)
	if err != nil {
		return "", err
	}
	ts := v1.Time{Time: created}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: ts, CreatedBy: createdBy},
	})
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = "amd64", "linux", ts
	cfg.Config = v1.Config{
		User:       user,
		Entrypoint: entrypoint,
		Env:        env,
		WorkingDir: workdir,
		Labels:     anns,
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", err
	}
	// The labels also annotate the manifest, where registries show them without reading the config.
	img = mutate.Annotations(img, anns).(v1.Image)

	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		return "", err
	}
	refName := map[string]string{"org.opencontainers.image.ref.name": ref.TagStr()}
	if err := p.AppendImage(img, layout.WithAnnotations(refName)); err != nil {
		return "", err
	}
	if err := tarball.WriteToFile(tarPath, ref, img); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
