//! The CRI (Container Runtime Interface) v1 subset the kubelet uses, as tonic/prost code: the
//! seam between the kubelet and a container runtime. The wire format is CRI v1's, so either side
//! can be swapped for a real CRI implementation. See `proto/cri.proto`.

#[allow(clippy::all, clippy::pedantic)]
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1 as cri;
