//! The CRI (Container Runtime Interface) v1 definitions: the seam between the kubelet and a
//! container runtime.
//!
//! Empty until the kubelet is built (issue #4): the RuntimeService and ImageService subset and
//! their tonic code land together with the first runtime that serves them, so that nothing here
//! is untested.
