package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"k8s.io/apimachinery/pkg/util/rand"
)

// CRC64/NVME as S3 uses it: Go's crc64 applies the all-ones init and final xor itself.
var crc64nvme = crc64.MakeTable(0x9a6c9329ac4bc9b5)

func awsConfig(endpoint, key, secret string) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(key, secret, ""),
		BaseEndpoint: aws.String(endpoint),
	}
}

func s3Client(cfg aws.Config) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
}

func errorCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

func TestCRC64NVMEKnownAnswer(t *testing.T) {
	if got := crc64.Checksum([]byte("123456789"), crc64nvme); got != 0xae8b14860a799888 {
		t.Fatalf("crc64nvme(123456789) = %x", got)
	}
}

// versitygw: a multipart upload with CRC64NVME part checksums completes with a full-object
// checksum that reads back equal to the one computed here.
func TestVersitygwMultipartWithCRC64NVME(t *testing.T) {
	ctx := context.Background()
	c := s3Client(awsConfig(mustEnv(t, "S3_ENDPOINT"), mustEnv(t, "S3_ACCESS_KEY"), mustEnv(t, "S3_SECRET_KEY")))
	bucket := "ground-" + rand.String(8)
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	part1 := bytes.Repeat([]byte("line of data\n"), 5*1024*1024/13+1)
	part2 := []byte("the tail\n")
	whole := append(append([]byte{}, part1...), part2...)
	key := "multi/object.sync"
	mpu, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &bucket, Key: &key,
		ChecksumAlgorithm: s3types.ChecksumAlgorithmCrc64nvme,
		ChecksumType:      s3types.ChecksumTypeFullObject,
	})
	if err != nil {
		t.Fatal(err)
	}
	var parts []s3types.CompletedPart
	for i, data := range [][]byte{part1, part2} {
		n := int32(i + 1)
		out, err := c.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &bucket, Key: &key, UploadId: mpu.UploadId, PartNumber: &n,
			Body: bytes.NewReader(data), ChecksumAlgorithm: s3types.ChecksumAlgorithmCrc64nvme,
		})
		if err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
		if out.ChecksumCRC64NVME == nil {
			t.Fatalf("part %d: server returned no CRC64NVME", n)
		}
		parts = append(parts, s3types.CompletedPart{PartNumber: &n, ETag: out.ETag, ChecksumCRC64NVME: out.ChecksumCRC64NVME})
	}
	var sum [8]byte
	binary.BigEndian.PutUint64(sum[:], crc64.Checksum(whole, crc64nvme))
	want := base64.StdEncoding.EncodeToString(sum[:])
	done, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &bucket, Key: &key, UploadId: mpu.UploadId,
		MultipartUpload:   &s3types.CompletedMultipartUpload{Parts: parts},
		ChecksumType:      s3types.ChecksumTypeFullObject,
		ChecksumCRC64NVME: &want,
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(done.ChecksumCRC64NVME) != want {
		t.Fatalf("complete returned %q, want %q", aws.ToString(done.ChecksumCRC64NVME), want)
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key, ChecksumMode: s3types.ChecksumModeEnabled})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ChecksumCRC64NVME) != want || aws.ToInt64(head.ContentLength) != int64(len(whole)) {
		t.Fatalf("head: checksum %q size %d, want %q %d", aws.ToString(head.ChecksumCRC64NVME), aws.ToInt64(head.ContentLength), want, len(whole))
	}
	// A wrong full-object checksum must be refused, not stored.
	bad := base64.StdEncoding.EncodeToString(make([]byte, 8))
	mpu2, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: aws.String("multi/bad"),
		ChecksumAlgorithm: s3types.ChecksumAlgorithmCrc64nvme, ChecksumType: s3types.ChecksumTypeFullObject})
	if err != nil {
		t.Fatal(err)
	}
	one := int32(1)
	p, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: aws.String("multi/bad"), UploadId: mpu2.UploadId,
		PartNumber: &one, Body: bytes.NewReader(part2), ChecksumAlgorithm: s3types.ChecksumAlgorithmCrc64nvme})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &bucket, Key: aws.String("multi/bad"), UploadId: mpu2.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: []s3types.CompletedPart{{PartNumber: &one, ETag: p.ETag, ChecksumCRC64NVME: p.ChecksumCRC64NVME}}},
		ChecksumType:    s3types.ChecksumTypeFullObject, ChecksumCRC64NVME: &bad})
	if err == nil {
		t.Fatal("a completion with a wrong full-object checksum was accepted")
	}
	t.Logf("wrong full-object checksum refused with %s", errorCode(err))
}

func TestVersitygwRefusesWrongSecret(t *testing.T) {
	c := s3Client(awsConfig(mustEnv(t, "S3_ENDPOINT"), mustEnv(t, "S3_ACCESS_KEY"), "not-the-secret"))
	_, err := c.ListBuckets(context.Background(), &s3.ListBucketsInput{})
	if code := errorCode(err); code != "SignatureDoesNotMatch" {
		t.Fatalf("want SignatureDoesNotMatch, got %v", err)
	}
}

func motoAdmin(t *testing.T) aws.Config {
	return awsConfig(mustEnv(t, "MOTO_ENDPOINT"), mustEnv(t, "MOTO_ACCESS_KEY"), mustEnv(t, "MOTO_SECRET_KEY"))
}

// moto: AssumeRole with the right ExternalId returns credentials whose identity is the assumed
// role; a wrong ExternalId is refused.
func TestMotoAssumeRoleWithExternalId(t *testing.T) {
	ctx := context.Background()
	admin := motoAdmin(t)
	me, err := sts.NewFromConfig(admin).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	role := "outbound-" + rand.String(6)
	trust := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":%q},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:ExternalId":"ext-123"}}}]}`, aws.ToString(me.Arn))
	created, err := iam.NewFromConfig(admin).CreateRole(ctx, &iam.CreateRoleInput{RoleName: &role, AssumeRolePolicyDocument: &trust})
	if err != nil {
		t.Fatal(err)
	}
	stsc := sts.NewFromConfig(admin)
	if _, err := stsc.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: created.Role.Arn, RoleSessionName: aws.String("t"), ExternalId: aws.String("wrong")}); errorCode(err) != "AccessDenied" {
		t.Fatalf("wrong ExternalId: want AccessDenied, got %v", err)
	}
	out, err := stsc.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: created.Role.Arn, RoleSessionName: aws.String("outbound"), ExternalId: aws.String("ext-123")})
	if err != nil {
		t.Fatal(err)
	}
	assumed := awsConfig(mustEnv(t, "MOTO_ENDPOINT"), aws.ToString(out.Credentials.AccessKeyId), aws.ToString(out.Credentials.SecretAccessKey))
	assumed.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(out.Credentials.AccessKeyId), aws.ToString(out.Credentials.SecretAccessKey), aws.ToString(out.Credentials.SessionToken))
	id, err := sts.NewFromConfig(assumed).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(aws.ToString(id.Arn), ":assumed-role/"+role+"/outbound") {
		t.Fatalf("identity %q is not the assumed role", aws.ToString(id.Arn))
	}
}

// moto: a principal without any allowing policy gets AccessDenied on PutObject.
func TestMotoDeniesPrincipalWithoutPermission(t *testing.T) {
	ctx := context.Background()
	admin := motoAdmin(t)
	bucket := "ground-" + rand.String(8)
	if _, err := s3Client(admin).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	user := "nobody-" + rand.String(6)
	ic := iam.NewFromConfig(admin)
	if _, err := ic.CreateUser(ctx, &iam.CreateUserInput{UserName: &user}); err != nil {
		t.Fatal(err)
	}
	key, err := ic.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: &user})
	if err != nil {
		t.Fatal(err)
	}
	nobody := s3Client(awsConfig(mustEnv(t, "MOTO_ENDPOINT"), aws.ToString(key.AccessKey.AccessKeyId), aws.ToString(key.AccessKey.SecretAccessKey)))
	_, err = nobody.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("x"), Body: strings.NewReader("x")})
	if code := errorCode(err); code != "AccessDenied" {
		t.Fatalf("want AccessDenied, got %v", err)
	}
	// The admin may write the same object: the refusal was about the principal, not the bucket.
	if _, err := s3Client(admin).PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String("x"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
}
