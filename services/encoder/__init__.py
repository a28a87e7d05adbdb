"""Edge encoder: the gRPC Encoder service and the frame-streaming client for Analytics."""
