"""The gateway's data plane: decoding, per-version runtimes and batching, with no transport.

Nothing here imports grpc or a generated stub: the codec works on the protobuf messages it is
handed, the version runtime and the batcher on numpy arrays. The servicers sit above.
"""
