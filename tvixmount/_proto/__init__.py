"""Generated protobuf/gRPC modules (make proto); do not edit."""
