//! Prometheus metrics of the controller, with bounded labels only.
