"""Explanations where production serves models: ``reciprocam serve`` and Triton model repositories.

    client (tritonclient, KServe, curl) ──REST (rest.py) / gRPC (grpc_api.py)──► tensors.py: wire tensors
      ──► service.py: one model ──► signature.py: checked request ──► batcher.py: one explainer thread
      ◄── outputs: scores, target, saliency, saliency_u8, overlay (signature.py)
    v1.py: KServe's v1 :predict / :explain over the same path;  server.py: the process, ports and signals
    triton.py: model configurations, and ``reciprocam fuse --triton-repo``

Only triton.py, signature.py, batcher.py, tensors.py and limits.py load without the ``[serve]`` extra.
"""
