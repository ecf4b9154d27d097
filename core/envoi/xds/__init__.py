"""Dynamic configuration (xDS): listeners, clusters and endpoints from files or from any xDS
control plane over gRPC (ADS or per-type streams, state of the world or delta).

* :mod:`envoi.xds.protocol` -- the wire protocol, sans-IO (requests, ACK/NACK, backoff);
* :mod:`envoi.xds.fs` -- filesystem subscriptions (a file moved into place);
* :mod:`envoi.xds.grpc_mux` -- the gRPC streams;
* :mod:`envoi.xds.manager` -- the main process: subscriptions -> updates;
* :mod:`envoi.xds.listeners`, :mod:`envoi.xds.clusters` -- updates every process applies;
* :mod:`envoi.xds.state` -- what each process holds.
"""
