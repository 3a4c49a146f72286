"""Code generated from proto/danube/v1/job.proto by scripts/generate_proto.sh.

Do not edit the job_pb2* files: change the proto and run the script. Importing
them needs the grpcio and protobuf versions pinned in danube/_requirements.txt.
"""
