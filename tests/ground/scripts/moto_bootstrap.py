"""Creates the ground's moto admin user during moto's unauthenticated start-up window.

moto is started with INITIAL_NO_AUTH_ACTION_COUNT=3: exactly the three calls below run before IAM
enforcement begins (CreateUser, PutUserPolicy, CreateAccessKey). Every later request, this
script's check included, is authenticated and authorised against moto's IAM.
Prints the admin's keys as JSON.
"""
import json
import sys

import boto3

endpoint = sys.argv[1]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="ground-admin")
iam.put_user_policy(UserName="ground-admin", PolicyName="admin", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}))
key = iam.create_access_key(UserName="ground-admin")["AccessKey"]
creds = dict(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
# From here on moto enforces IAM: prove the admin's keys work and an unknown key is refused.
sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1", **creds)
arn = sts.get_caller_identity()["Arn"]
try:
    boto3.client("sts", **kw).get_caller_identity()
    sys.exit("moto does not enforce IAM: an unknown key was accepted")
except Exception:
    pass
print(json.dumps({"accessKeyId": key["AccessKeyId"], "secretAccessKey": key["SecretAccessKey"], "arn": arn}))
