package dest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach an S3 bucket (AWS, MinIO, versitygw, ...).
type S3Config struct {
	Endpoint  string // host:port
	Bucket    string
	Prefix    string // optional key prefix, "a/b"
	Region    string // default us-east-1
	AccessKey string
	SecretKey string
	PathStyle bool   // path-style requests (MinIO, versitygw); else chosen by endpoint
	Insecure  bool   // plain HTTP
	CACertPEM []byte // extra CA(s) to trust for HTTPS
}

// singlePutMax is the largest object sent as one PUT (S3's limit). Larger
// ones go up as a multipart upload, which S3 also only makes visible when
// completed.
const singlePutMax = 5 << 30

type s3Dest struct {
	c      *minio.Client
	bucket string
	prefix string // "" or "a/b/"
	loc    string
	secret string
}

// NewS3 prepares an S3 destination. It does not contact the server: errors
// such as a wrong key or a missing bucket show on first use (see Test).
func NewS3(ctx context.Context, cfg S3Config) (Destination, error) {
	prefix := strings.Trim(cfg.Prefix, "/")
	loc := "s3://" + cfg.Endpoint + "/" + cfg.Bucket
	if prefix != "" {
		loc += "/" + prefix
		prefix += "/"
	}
	d := &s3Dest{bucket: cfg.Bucket, prefix: prefix, loc: loc, secret: cfg.SecretKey}
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, newError("open", "", loc, ErrInvalid, errors.New("endpoint and bucket are required"))
	}
	if prefix != "" {
		if err := checkName(strings.TrimSuffix(prefix, "/")); err != nil {
			return nil, newError("open", "", loc, ErrInvalid, errors.New("bad prefix: "+err.Error()))
		}
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	tr, err := minio.DefaultTransport(!cfg.Insecure)
	if err != nil {
		return nil, d.fail("open", "", err)
	}
	if len(cfg.CACertPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(cfg.CACertPEM) {
			return nil, newError("open", "", loc, ErrInvalid, errors.New("no certificate in CA PEM"))
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	d.c, err = minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       !cfg.Insecure,
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    tr,
		MaxRetries:   1, // retries belong to WithRetry, which knows what is permanent
	})
	if err != nil {
		return nil, newError("open", "", loc, ErrInvalid, err, cfg.SecretKey)
	}
	return d, nil
}

func (d *s3Dest) Location() string { return d.loc }
func (d *s3Dest) Close() error     { return nil }

func (d *s3Dest) fail(op, name string, err error) error {
	return newError(op, name, d.loc, s3Kind(err), err, d.secret)
}

func s3Kind(err error) error {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case "NoSuchKey":
			return ErrNotFound
		case "NoSuchBucket":
			return ErrBucketMissing
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidSecurity",
			"XAdminUserNotFound": // versitygw's answer to an unknown access key
			return ErrAuth
		case "AccessDenied", "AllAccessDisabled", "AccountProblem":
			return ErrPermission
		case "EntityTooLarge", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded",
			"InsufficientStorage": // versitygw on ENOSPC
			return ErrNoSpace
		}
	}
	// An untrusted or mismatched server certificate is configuration (set
	// CACertPEM, fix the endpoint), not a network hiccup to retry.
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) {
		return ErrInvalid
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrUnreachable
	}
	return nil
}

func (d *s3Dest) key(name string) string { return d.prefix + name }

func (d *s3Dest) Save(ctx context.Context, name string, r io.ReadSeeker, size int64) error {
	if err := checkName(name); err != nil {
		return newError("save", name, d.loc, ErrInvalid, err)
	}
	if size < 0 {
		return newError("save", name, d.loc, ErrInvalid, errors.New("negative size"))
	}
	// One streaming PUT (aws-chunked signing over HTTP, so nothing is
	// buffered): the object appears whole or not at all. Above S3's single
	// PUT limit, a multipart upload one 64 MiB part at a time.
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: size <= singlePutMax}
	if !opts.DisableMultipart {
		opts.PartSize, opts.NumThreads = 64<<20, 1
	}
	if _, err := d.c.PutObject(ctx, d.bucket, d.key(name), r, size, opts); err != nil {
		return d.fail("save", name, err)
	}
	return nil
}

func (d *s3Dest) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, newError("open", name, d.loc, ErrInvalid, err)
	}
	var opts minio.GetObjectOptions
	var err error
	switch {
	case length > 0:
		err = opts.SetRange(offset, offset+length-1)
	case offset > 0:
		err = opts.SetRange(offset, 0)
	}
	if err != nil {
		return nil, newError("open", name, d.loc, ErrInvalid, err)
	}
	rc, _, _, err := minio.Core{Client: d.c}.GetObject(ctx, d.bucket, d.key(name), opts)
	if err != nil {
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "InvalidRange" {
			// At or past the end (or any range of an empty object): like a
			// file, that reads as empty, once the object is known to exist.
			if _, serr := d.Stat(ctx, name); serr != nil {
				return nil, serr
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, d.fail("open", name, err)
	}
	return rc, nil
}

func (d *s3Dest) Stat(ctx context.Context, name string) (FileInfo, error) {
	if err := checkName(name); err != nil {
		return FileInfo{}, newError("stat", name, d.loc, ErrInvalid, err)
	}
	oi, err := d.c.StatObject(ctx, d.bucket, d.key(name), minio.StatObjectOptions{})
	if err != nil {
		return FileInfo{}, d.fail("stat", name, err)
	}
	return FileInfo{Name: name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

func (d *s3Dest) List(ctx context.Context, prefix string, fn func(FileInfo) error) error {
	if err := checkPrefix(prefix); err != nil {
		return newError("list", prefix, d.loc, ErrInvalid, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var files []FileInfo
	for oi := range d.c.ListObjects(ctx, d.bucket, minio.ListObjectsOptions{Prefix: d.key(prefix), Recursive: true}) {
		if oi.Err != nil {
			return d.fail("list", prefix, oi.Err)
		}
		name := strings.TrimPrefix(oi.Key, d.prefix)
		if strings.HasSuffix(name, "/") || isTemp(lastElem(name)) {
			continue // directory markers; nothing of ours is a temp name
		}
		files = append(files, FileInfo{Name: name, Size: oi.Size, ModTime: oi.LastModified})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (d *s3Dest) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return newError("remove", name, d.loc, ErrInvalid, err)
	}
	err := d.c.RemoveObject(ctx, d.bucket, d.key(name), minio.RemoveObjectOptions{})
	if err != nil && s3Kind(err) != ErrNotFound {
		return d.fail("remove", name, err)
	}
	return nil
}

func (d *s3Dest) Usage(ctx context.Context) (Usage, bool, error) { return Usage{}, false, nil }
