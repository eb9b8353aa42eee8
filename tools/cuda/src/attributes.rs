// SPDX-License-Identifier: GPL-2.0
//! `cuDeviceGetAttribute`: what a real GeForce RTX 40xx (Ada, sm_89) or 50xx (Blackwell
//! GeForce, sm_120) card answers for every `CUdevice_attribute` of CUDA 13.0.
//!
//! Where the values come from:
//! - the template is a real NVIDIA H200 on driver 580.159.04 (CUDA 13.0), every attribute
//!   read through cuda-python (`shared/reference/cuda/capture-580/01-driver.out`, `ATTR`
//!   lines): limits that do not depend on the chip (grid and block dimensions, texture and
//!   surface sizes, pitch, alignment) and what the 580 driver supports as software (memory
//!   pools, VMM, stream memory operations, IPC) are taken from it unchanged;
//! - what differs on GeForce (per-SM limits, L2, copy engines, FP64 rate, ECC, GPUDirect
//!   RDMA, Hopper-and-later features on Ada) comes from published `deviceQuery` output of
//!   real cards (RTX 4090, 5090, 5060 Ti), the CUDA Programming Guide's table of compute
//!   capabilities, and NVIDIA's specifications; each choice that rests on less is marked
//!   "(best knowledge)" where it is made;
//! - the card itself (SM count, clocks, bus width, PCI location and ids) from [`CardFacts`],
//!   which the caller fills from emuv's sysfs.
//!
//! The numbers that exist are those of `CUdevice_attribute_enum` in CUDA 13.0's `cuda.h`:
//! 1 to 147, with no gaps. Anything else is `CUDA_ERROR_INVALID_VALUE`, as the real 580 driver
//! answers for 9999 and for 148 and 151 to 156 (numbers later headers added).
//!
//! The CUDA runtime fills `cudaDeviceProp` from the same answers, so the helpers that compute
//! the card-dependent values are public too.

/// What the attribute table needs to know about a card (filled from emuv's sysfs by the caller).
#[derive(Clone, Debug)]
pub struct CardFacts {
    /// emuv's model key: one of "4060","4060ti","4060ti16","4070","4070super","4070ti",
    /// "4070tisuper","4080","4080super","4090","5060","5060ti","5060ti16","5070","5070ti",
    /// "5080","5090" (a marketing name such as "NVIDIA GeForce RTX 4070 Ti SUPER" works too).
    pub model: String,
    /// (8, 9) Ada, (12, 0) Blackwell GeForce.
    pub compute_capability: (u32, u32),
    /// SMs = cuda_cores / 128 on both architectures.
    pub cuda_cores: u32,
    /// Rated boost clock, MHz.
    pub boost_clock_mhz: u32,
    /// Memory bus width, bits.
    pub memory_bus_width_bits: u32,
    /// Peak MB/s, e.g. 1_008_000 for a 4090.
    pub memory_bandwidth_mbps: u32,
    /// PCI domain of the card's address (dddd:bb:dd.f).
    pub pci_domain: u32,
    /// PCI bus of the card's address.
    pub pci_bus: u32,
    /// PCI device (slot) of the card's address.
    pub pci_device: u32,
    /// PCI product id, e.g. 0x2684 (4090).
    pub pci_device_id: u16,
    /// Whatever the caller has; may be 0. Either the whole dword at config offset 0x2c
    /// (subsystem id << 16 | subsystem vendor) or the 16-bit subsystem id alone.
    pub pci_subsystem_id: u32,
}

/// The highest attribute number CUDA 13.0 defines (`CU_DEVICE_ATTRIBUTE_MAX - 1`,
/// `CU_DEVICE_ATTRIBUTE_ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED`).
pub const LAST: i32 = 147;

/// `CUDA_ERROR_INVALID_VALUE`: the real driver's answer for a number that is no attribute.
pub const CUDA_ERROR_INVALID_VALUE: u32 = 1;

/// NVIDIA's PCI vendor id, the low half of attribute 139 (and of 140 for NVIDIA's own boards).
pub const NVIDIA_PCI_VENDOR: u32 = 0x10de;

const MIB: u32 = 1 << 20;

/// CUDA cores per SM on Ada and Blackwell GeForce alike.
const CORES_PER_SM: u32 = 128;

/// The value of attribute `attribute` (the CUdevice_attribute number), or None when the
/// number is not a CUdevice_attribute the CUDA 13.0 headers define.
pub fn value(card: &CardFacts, attribute: i32) -> Option<i32> {
    lookup(card, attribute).ok()
}

/// The value of attribute `attribute`, or the CUDA error the real 580 driver returns for it:
/// `CUDA_ERROR_INVALID_VALUE` (1) for every number outside 1..=[`LAST`]. Within that range the
/// H200 capture answered every number with success, so no attribute here is an error.
pub fn lookup(card: &CardFacts, attribute: i32) -> Result<i32, u32> {
    use number::*;
    let sm90 = at_least(card, 9);
    let v = match attribute {
        // Thread, grid, register and constant limits: the same on every card since Volta
        // (H200 capture; 4090 and 5090 deviceQuery agree).
        MAX_THREADS_PER_BLOCK | MAX_BLOCK_DIM_X | MAX_BLOCK_DIM_Y => 1024,
        MAX_BLOCK_DIM_Z => 64,
        MAX_GRID_DIM_X | MAX_PITCH => i32::MAX,
        MAX_GRID_DIM_Y | MAX_GRID_DIM_Z => 65535,
        MAX_SHARED_MEMORY_PER_BLOCK => 48 * 1024,
        TOTAL_CONSTANT_MEMORY | MAX_REGISTERS_PER_BLOCK | MAX_REGISTERS_PER_MULTIPROCESSOR => {
            64 * 1024
        }
        WARP_SIZE => 32,
        RESERVED_SHARED_MEMORY_PER_BLOCK => 1024,

        // The card's own numbers.
        CLOCK_RATE => clock_rate_khz(card),
        MULTIPROCESSOR_COUNT => int(sm_count(card).into()),
        MEMORY_CLOCK_RATE => memory_clock_khz(card),
        GLOBAL_MEMORY_BUS_WIDTH => int(card.memory_bus_width_bits.into()),
        L2_CACHE_SIZE => int(l2_cache_bytes(card).into()),
        MAX_PERSISTING_L2_CACHE_SIZE => int(persisting_l2_max_bytes(card).into()),
        MAX_ACCESS_POLICY_WINDOW_SIZE => int(access_policy_max_window_bytes(card).into()),
        MAX_THREADS_PER_MULTIPROCESSOR => int(max_threads_per_sm(card).into()),
        MAX_BLOCKS_PER_MULTIPROCESSOR => int(max_blocks_per_sm(card).into()),
        MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => int(shared_memory_per_sm(card).into()),
        MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => int(shared_memory_per_block_optin(card).into()),
        COMPUTE_CAPABILITY_MAJOR => int(card.compute_capability.0.into()),
        COMPUTE_CAPABILITY_MINOR => int(card.compute_capability.1.into()),
        PCI_BUS_ID => int(card.pci_bus.into()),
        // The slot (device) number of the PCI address, not the product id (6 on the H200 at
        // 0000:00:06.0).
        PCI_DEVICE_ID => int(card.pci_device.into()),
        PCI_DOMAIN_ID => int(card.pci_domain.into()),
        GPU_PCI_DEVICE_ID => gpu_pci_device_id(card),
        GPU_PCI_SUBSYSTEM_ID => gpu_pci_subsystem_id(card),

        // Texture and surface limits: chip-independent (H200 capture; the 4090 and 5090
        // deviceQuery show the same 1D, 2D, 3D and layered sizes).
        TEXTURE_ALIGNMENT | SURFACE_ALIGNMENT => 512,
        TEXTURE_PITCH_ALIGNMENT => 32,
        MAXIMUM_TEXTURE1D_WIDTH
        | MAXIMUM_TEXTURE2D_WIDTH
        | MAXIMUM_SURFACE2D_WIDTH
        | MAXIMUM_TEXTURE2D_LINEAR_WIDTH => 131_072,
        MAXIMUM_TEXTURE2D_HEIGHT | MAXIMUM_SURFACE2D_HEIGHT => 65_536,
        MAXIMUM_TEXTURE3D_WIDTH
        | MAXIMUM_TEXTURE3D_HEIGHT
        | MAXIMUM_TEXTURE3D_DEPTH
        | MAXIMUM_SURFACE3D_WIDTH
        | MAXIMUM_SURFACE3D_HEIGHT
        | MAXIMUM_SURFACE3D_DEPTH => 16_384,
        MAXIMUM_TEXTURE2D_LAYERED_WIDTH
        | MAXIMUM_TEXTURE2D_LAYERED_HEIGHT
        | MAXIMUM_TEXTURE1D_LAYERED_WIDTH
        | MAXIMUM_TEXTURE2D_GATHER_WIDTH
        | MAXIMUM_TEXTURE2D_GATHER_HEIGHT
        | MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE
        | MAXIMUM_TEXTURECUBEMAP_WIDTH
        | MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH
        | MAXIMUM_SURFACE1D_WIDTH
        | MAXIMUM_SURFACE1D_LAYERED_WIDTH
        | MAXIMUM_SURFACE2D_LAYERED_WIDTH
        | MAXIMUM_SURFACE2D_LAYERED_HEIGHT
        | MAXIMUM_SURFACECUBEMAP_WIDTH
        | MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH
        | MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH
        | MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT
        | MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH => 32_768,
        MAXIMUM_TEXTURE2D_LAYERED_LAYERS
        | MAXIMUM_TEXTURE1D_LAYERED_LAYERS
        | MAXIMUM_SURFACE1D_LAYERED_LAYERS
        | MAXIMUM_SURFACE2D_LAYERED_LAYERS => 2048,
        MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS | MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS => 2046,
        MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE | MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE => 8192,
        // Deprecated in favour of cuDeviceGetTexture1DLinearMaxWidth, still answered.
        MAXIMUM_TEXTURE1D_LINEAR_WIDTH => 1 << 28,
        MAXIMUM_TEXTURE2D_LINEAR_HEIGHT => 65_000,
        MAXIMUM_TEXTURE2D_LINEAR_PITCH => 2_097_120,

        // Capabilities every card of both generations has (H200 capture; "Yes" in the 4090
        // and 5090 deviceQuery where it prints them). GPU_OVERLAP and CAN_TEX2D_GATHER are
        // deprecated and still answer 1.
        GPU_OVERLAP
        | CAN_MAP_HOST_MEMORY
        | CONCURRENT_KERNELS
        | UNIFIED_ADDRESSING
        | CAN_TEX2D_GATHER
        | STREAM_PRIORITIES_SUPPORTED
        | GLOBAL_L1_CACHE_SUPPORTED
        | LOCAL_L1_CACHE_SUPPORTED
        | MANAGED_MEMORY
        | COMPUTE_PREEMPTION_SUPPORTED
        | CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
        | COOPERATIVE_LAUNCH
        | COOPERATIVE_MULTI_DEVICE_LAUNCH
        | HOST_REGISTER_SUPPORTED
        | VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
        | HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED
        | SPARSE_CUDA_ARRAY_SUPPORTED
        | READ_ONLY_HOST_REGISTER_SUPPORTED
        | TIMELINE_SEMAPHORE_INTEROP_SUPPORTED
        | MEMORY_POOLS_SUPPORTED
        | DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED
        | CAN_USE_64_BIT_STREAM_MEM_OPS
        | CAN_USE_STREAM_WAIT_VALUE_NOR
        | IPC_EVENT_SUPPORTED
        | HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
        | HOST_NUMA_MEMORY_POOLS_SUPPORTED
        | HOST_MEMORY_POOLS_SUPPORTED
        | HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 1,
        // Concurrent managed access: 1 on Linux for Pascal and later.
        CONCURRENT_MANAGED_ACCESS => 1,
        // A driver and kernel feature (1 on the H200), not one of the chip.
        DMA_BUF_SUPPORTED => 1,
        // Compressible memory works on Ada GeForce too: an RTX 4070 laptop GPU gains from it
        // in SeisSol's L2-compression change (best knowledge).
        GENERIC_COMPRESSION_SUPPORTED => 1,
        // 1 on the H200, a PCIe card like these (best knowledge).
        UNIFIED_FUNCTION_POINTERS => 1,
        // POSIX file descriptors (1) only: the H200's fabric handles (8) need NVLink and IMEX,
        // which GeForce lacks (best knowledge).
        MEMPOOL_SUPPORTED_HANDLE_TYPES => 1,

        // Features of sm_90 and later: thread-block clusters, the tensor memory accelerator,
        // four memory synchronization domains (one before Hopper). Blackwell GeForce is
        // taken to have Hopper's four domains (best knowledge).
        CLUSTER_LAUNCH | TENSOR_MAP_ACCESS_SUPPORTED => i32::from(sm90),
        MEM_SYNC_DOMAIN_COUNT => {
            if sm90 {
                4
            } else {
                1
            }
        }

        // No watchdog without a display (headless Linux; "Run time limit on kernels: No").
        KERNEL_EXEC_TIMEOUT => 0,
        // GeForce ships with ECC off ("Device has ECC support: Disabled").
        ECC_ENABLED => 0,
        // GeForce FP64 runs at 1/64 of FP32 on Ada and Blackwell.
        SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO => 64,
        // "Yes with 2 copy engine(s)" on 4090, 5090 and 5060 Ti.
        ASYNC_ENGINE_COUNT => 2,
        // One GPU per board; the group id of a single card is 0, as on the H200. A host with
        // several boards would number them, which a table of one card cannot (best knowledge).
        MULTI_GPU_BOARD | MULTI_GPU_BOARD_GROUP_ID => 0,
        // Without HMM (as on the H200 capture; best knowledge for GeForce's default
        // configuration) and without ATS or NVLink-C2C on PCIe.
        PAGEABLE_MEMORY_ACCESS
        | PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES
        | DIRECT_MANAGED_MEM_ACCESS_FROM_HOST
        | HOST_NATIVE_ATOMIC_SUPPORTED
        | ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED => 0,
        // GPUDirect RDMA is a Tesla/Quadro feature (NVIDIA's GPUDirect RDMA guide, gdrcopy):
        // off on GeForce with everything that qualifies it (best knowledge for the flush
        // options and the write ordering, which then say "none").
        GPU_DIRECT_RDMA_SUPPORTED
        | GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED
        | GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS
        | GPU_DIRECT_RDMA_WRITES_ORDERING => 0,
        // Fabric handles and multicast need NVLink/NVSwitch; see MEMPOOL_SUPPORTED_HANDLE_TYPES.
        HANDLE_TYPE_FABRIC_SUPPORTED | MULTICAST_SUPPORTED => 0,
        // Linux: no TCC, no Windows handles, no Direct3D 12 compute-in-graphics.
        TCC_DRIVER
        | HANDLE_TYPE_WIN32_HANDLE_SUPPORTED
        | HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED
        | D3D12_CIG_SUPPORTED => 0,
        // 0 as on the H200 (best knowledge for GeForce).
        VULKAN_CIG_SUPPORTED => 0,
        // The copy-engine decompressor is a B200/GB200 part.
        MEM_DECOMPRESS_ALGORITHM_MASK | MEM_DECOMPRESS_MAXIMUM_LENGTH => 0,
        // What the 580 driver answers (H200 capture): the v1 stream memory operations are
        // deprecated and report 0; the card's memory is no NUMA node (id -1) and the host's
        // node is 0; no MPS, no multi-node IPC, no DMA-BUF host allocations, no remote flush;
        // the default compute mode.
        CAN_USE_STREAM_MEM_OPS_V1
        | CAN_USE_64_BIT_STREAM_MEM_OPS_V1
        | CAN_USE_STREAM_WAIT_VALUE_NOR_V1
        | NUMA_CONFIG
        | HOST_NUMA_ID
        | MPS_ENABLED
        | HOST_NUMA_MULTINODE_IPC_SUPPORTED
        | HOST_ALLOC_DMA_BUF_SUPPORTED
        | CAN_FLUSH_REMOTE_WRITES
        | COMPUTE_MODE
        | INTEGRATED => 0,
        NUMA_ID => -1,

        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    };
    Ok(v)
}

/// Every `CUdevice_attribute_enum` number of CUDA 13.0, one name each (the current name where
/// a deprecated alias shares the number).
#[allow(dead_code)]
mod number {
    pub const MAX_THREADS_PER_BLOCK: i32 = 1;
    pub const MAX_BLOCK_DIM_X: i32 = 2;
    pub const MAX_BLOCK_DIM_Y: i32 = 3;
    pub const MAX_BLOCK_DIM_Z: i32 = 4;
    pub const MAX_GRID_DIM_X: i32 = 5;
    pub const MAX_GRID_DIM_Y: i32 = 6;
    pub const MAX_GRID_DIM_Z: i32 = 7;
    pub const MAX_SHARED_MEMORY_PER_BLOCK: i32 = 8;
    pub const TOTAL_CONSTANT_MEMORY: i32 = 9;
    pub const WARP_SIZE: i32 = 10;
    pub const MAX_PITCH: i32 = 11;
    pub const MAX_REGISTERS_PER_BLOCK: i32 = 12;
    pub const CLOCK_RATE: i32 = 13;
    pub const TEXTURE_ALIGNMENT: i32 = 14;
    pub const GPU_OVERLAP: i32 = 15;
    pub const MULTIPROCESSOR_COUNT: i32 = 16;
    pub const KERNEL_EXEC_TIMEOUT: i32 = 17;
    pub const INTEGRATED: i32 = 18;
    pub const CAN_MAP_HOST_MEMORY: i32 = 19;
    pub const COMPUTE_MODE: i32 = 20;
    pub const MAXIMUM_TEXTURE1D_WIDTH: i32 = 21;
    pub const MAXIMUM_TEXTURE2D_WIDTH: i32 = 22;
    pub const MAXIMUM_TEXTURE2D_HEIGHT: i32 = 23;
    pub const MAXIMUM_TEXTURE3D_WIDTH: i32 = 24;
    pub const MAXIMUM_TEXTURE3D_HEIGHT: i32 = 25;
    pub const MAXIMUM_TEXTURE3D_DEPTH: i32 = 26;
    pub const MAXIMUM_TEXTURE2D_LAYERED_WIDTH: i32 = 27;
    pub const MAXIMUM_TEXTURE2D_LAYERED_HEIGHT: i32 = 28;
    pub const MAXIMUM_TEXTURE2D_LAYERED_LAYERS: i32 = 29;
    pub const SURFACE_ALIGNMENT: i32 = 30;
    pub const CONCURRENT_KERNELS: i32 = 31;
    pub const ECC_ENABLED: i32 = 32;
    pub const PCI_BUS_ID: i32 = 33;
    pub const PCI_DEVICE_ID: i32 = 34;
    pub const TCC_DRIVER: i32 = 35;
    pub const MEMORY_CLOCK_RATE: i32 = 36;
    pub const GLOBAL_MEMORY_BUS_WIDTH: i32 = 37;
    pub const L2_CACHE_SIZE: i32 = 38;
    pub const MAX_THREADS_PER_MULTIPROCESSOR: i32 = 39;
    pub const ASYNC_ENGINE_COUNT: i32 = 40;
    pub const UNIFIED_ADDRESSING: i32 = 41;
    pub const MAXIMUM_TEXTURE1D_LAYERED_WIDTH: i32 = 42;
    pub const MAXIMUM_TEXTURE1D_LAYERED_LAYERS: i32 = 43;
    pub const CAN_TEX2D_GATHER: i32 = 44;
    pub const MAXIMUM_TEXTURE2D_GATHER_WIDTH: i32 = 45;
    pub const MAXIMUM_TEXTURE2D_GATHER_HEIGHT: i32 = 46;
    pub const MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE: i32 = 47;
    pub const MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE: i32 = 48;
    pub const MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE: i32 = 49;
    pub const PCI_DOMAIN_ID: i32 = 50;
    pub const TEXTURE_PITCH_ALIGNMENT: i32 = 51;
    pub const MAXIMUM_TEXTURECUBEMAP_WIDTH: i32 = 52;
    pub const MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH: i32 = 53;
    pub const MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS: i32 = 54;
    pub const MAXIMUM_SURFACE1D_WIDTH: i32 = 55;
    pub const MAXIMUM_SURFACE2D_WIDTH: i32 = 56;
    pub const MAXIMUM_SURFACE2D_HEIGHT: i32 = 57;
    pub const MAXIMUM_SURFACE3D_WIDTH: i32 = 58;
    pub const MAXIMUM_SURFACE3D_HEIGHT: i32 = 59;
    pub const MAXIMUM_SURFACE3D_DEPTH: i32 = 60;
    pub const MAXIMUM_SURFACE1D_LAYERED_WIDTH: i32 = 61;
    pub const MAXIMUM_SURFACE1D_LAYERED_LAYERS: i32 = 62;
    pub const MAXIMUM_SURFACE2D_LAYERED_WIDTH: i32 = 63;
    pub const MAXIMUM_SURFACE2D_LAYERED_HEIGHT: i32 = 64;
    pub const MAXIMUM_SURFACE2D_LAYERED_LAYERS: i32 = 65;
    pub const MAXIMUM_SURFACECUBEMAP_WIDTH: i32 = 66;
    pub const MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH: i32 = 67;
    pub const MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS: i32 = 68;
    pub const MAXIMUM_TEXTURE1D_LINEAR_WIDTH: i32 = 69;
    pub const MAXIMUM_TEXTURE2D_LINEAR_WIDTH: i32 = 70;
    pub const MAXIMUM_TEXTURE2D_LINEAR_HEIGHT: i32 = 71;
    pub const MAXIMUM_TEXTURE2D_LINEAR_PITCH: i32 = 72;
    pub const MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH: i32 = 73;
    pub const MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT: i32 = 74;
    pub const COMPUTE_CAPABILITY_MAJOR: i32 = 75;
    pub const COMPUTE_CAPABILITY_MINOR: i32 = 76;
    pub const MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH: i32 = 77;
    pub const STREAM_PRIORITIES_SUPPORTED: i32 = 78;
    pub const GLOBAL_L1_CACHE_SUPPORTED: i32 = 79;
    pub const LOCAL_L1_CACHE_SUPPORTED: i32 = 80;
    pub const MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: i32 = 81;
    pub const MAX_REGISTERS_PER_MULTIPROCESSOR: i32 = 82;
    pub const MANAGED_MEMORY: i32 = 83;
    pub const MULTI_GPU_BOARD: i32 = 84;
    pub const MULTI_GPU_BOARD_GROUP_ID: i32 = 85;
    pub const HOST_NATIVE_ATOMIC_SUPPORTED: i32 = 86;
    pub const SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: i32 = 87;
    pub const PAGEABLE_MEMORY_ACCESS: i32 = 88;
    pub const CONCURRENT_MANAGED_ACCESS: i32 = 89;
    pub const COMPUTE_PREEMPTION_SUPPORTED: i32 = 90;
    pub const CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: i32 = 91;
    pub const CAN_USE_STREAM_MEM_OPS_V1: i32 = 92;
    pub const CAN_USE_64_BIT_STREAM_MEM_OPS_V1: i32 = 93;
    pub const CAN_USE_STREAM_WAIT_VALUE_NOR_V1: i32 = 94;
    pub const COOPERATIVE_LAUNCH: i32 = 95;
    pub const COOPERATIVE_MULTI_DEVICE_LAUNCH: i32 = 96;
    pub const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: i32 = 97;
    pub const CAN_FLUSH_REMOTE_WRITES: i32 = 98;
    pub const HOST_REGISTER_SUPPORTED: i32 = 99;
    pub const PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES: i32 = 100;
    pub const DIRECT_MANAGED_MEM_ACCESS_FROM_HOST: i32 = 101;
    pub const VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: i32 = 102;
    pub const HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: i32 = 103;
    pub const HANDLE_TYPE_WIN32_HANDLE_SUPPORTED: i32 = 104;
    pub const HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED: i32 = 105;
    pub const MAX_BLOCKS_PER_MULTIPROCESSOR: i32 = 106;
    pub const GENERIC_COMPRESSION_SUPPORTED: i32 = 107;
    pub const MAX_PERSISTING_L2_CACHE_SIZE: i32 = 108;
    pub const MAX_ACCESS_POLICY_WINDOW_SIZE: i32 = 109;
    pub const GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED: i32 = 110;
    pub const RESERVED_SHARED_MEMORY_PER_BLOCK: i32 = 111;
    pub const SPARSE_CUDA_ARRAY_SUPPORTED: i32 = 112;
    pub const READ_ONLY_HOST_REGISTER_SUPPORTED: i32 = 113;
    pub const TIMELINE_SEMAPHORE_INTEROP_SUPPORTED: i32 = 114;
    pub const MEMORY_POOLS_SUPPORTED: i32 = 115;
    pub const GPU_DIRECT_RDMA_SUPPORTED: i32 = 116;
    pub const GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS: i32 = 117;
    pub const GPU_DIRECT_RDMA_WRITES_ORDERING: i32 = 118;
    pub const MEMPOOL_SUPPORTED_HANDLE_TYPES: i32 = 119;
    pub const CLUSTER_LAUNCH: i32 = 120;
    pub const DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED: i32 = 121;
    pub const CAN_USE_64_BIT_STREAM_MEM_OPS: i32 = 122;
    pub const CAN_USE_STREAM_WAIT_VALUE_NOR: i32 = 123;
    pub const DMA_BUF_SUPPORTED: i32 = 124;
    pub const IPC_EVENT_SUPPORTED: i32 = 125;
    pub const MEM_SYNC_DOMAIN_COUNT: i32 = 126;
    pub const TENSOR_MAP_ACCESS_SUPPORTED: i32 = 127;
    pub const HANDLE_TYPE_FABRIC_SUPPORTED: i32 = 128;
    pub const UNIFIED_FUNCTION_POINTERS: i32 = 129;
    pub const NUMA_CONFIG: i32 = 130;
    pub const NUMA_ID: i32 = 131;
    pub const MULTICAST_SUPPORTED: i32 = 132;
    pub const MPS_ENABLED: i32 = 133;
    pub const HOST_NUMA_ID: i32 = 134;
    pub const D3D12_CIG_SUPPORTED: i32 = 135;
    pub const MEM_DECOMPRESS_ALGORITHM_MASK: i32 = 136;
    pub const MEM_DECOMPRESS_MAXIMUM_LENGTH: i32 = 137;
    pub const VULKAN_CIG_SUPPORTED: i32 = 138;
    pub const GPU_PCI_DEVICE_ID: i32 = 139;
    pub const GPU_PCI_SUBSYSTEM_ID: i32 = 140;
    pub const HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: i32 = 141;
    pub const HOST_NUMA_MEMORY_POOLS_SUPPORTED: i32 = 142;
    pub const HOST_NUMA_MULTINODE_IPC_SUPPORTED: i32 = 143;
    pub const HOST_MEMORY_POOLS_SUPPORTED: i32 = 144;
    pub const HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: i32 = 145;
    pub const HOST_ALLOC_DMA_BUF_SUPPORTED: i32 = 146;
    pub const ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED: i32 = 147;
}

/// Streaming multiprocessors: 128 CUDA cores each on Ada and Blackwell GeForce.
pub fn sm_count(card: &CardFacts) -> u32 {
    card.cuda_cores / CORES_PER_SM
}

/// Attribute 13: the rated boost clock in kHz (deviceQuery's "GPU Max Clock rate": 2520 MHz on a
/// 4090, 2407 MHz on a 5090, both their rated boost).
pub fn clock_rate_khz(card: &CardFacts) -> i32 {
    int(u64::from(card.boost_clock_mhz) * 1000)
}

/// Attribute 36: the memory clock in kHz, half the per-pin data rate, plus the 1 MHz every real
/// card adds (deviceQuery: 4090 10501 MHz for 21 Gbps, 5090 14001 MHz for 28 Gbps, the H200
/// capture 3201000 kHz, a T4 5001 MHz).
pub fn memory_clock_khz(card: &CardFacts) -> i32 {
    let bytes_per_transfer = u64::from(card.memory_bus_width_bits / 8);
    match (u64::from(card.memory_bandwidth_mbps) * 1000).checked_div(bytes_per_transfer) {
        Some(0) | None => 0,
        Some(transfers_khz) => int(transfers_khz / 2 + 1000),
    }
}

/// Attribute 38: L2 cache in bytes, by model. The driver reports whole MiB.
pub fn l2_cache_bytes(card: &CardFacts) -> u32 {
    let mib = match model_key(&card.model).as_str() {
        // deviceQuery: 75497472 bytes.
        "4090" => 72,
        // Full AD103 (Ada whitepaper: 64 MB on the 4080).
        "4080" | "4080super" | "4080s" => 64,
        // AD103 cut to 48 MB (NVIDIA specifications; TechPowerUp GPU database).
        "4070tisuper" | "4070tis" => 48,
        // Full AD104 (Ada whitepaper), and the SUPER's AD104 keeps all of it.
        "4070ti" | "4070super" | "4070s" => 48,
        // AD104 cut to 36 MB (TechPowerUp GPU database).
        "4070" => 36,
        // AD106 32 MB, AD107 24 MB (NVIDIA's RTX 4060 family announcement).
        "4060ti" | "4060ti8" | "4060ti16" => 32,
        "4060" => 24,
        // deviceQuery: 100663296 bytes (GB202 cut from 128 MB).
        "5090" => 96,
        // Full GB203 64 MB; the 5070 Ti's GB203 keeps 48 (TechPowerUp GPU database).
        "5080" => 64,
        "5070ti" => 48,
        // Full GB205 (TechPowerUp GPU database).
        "5070" => 48,
        // deviceQuery of a 5060 Ti: 33554432 bytes; the 5060 has the same GB206 L2.
        "5060ti" | "5060ti8" | "5060ti16" | "5060" => 32,
        // A model this table does not know: the full die's 8 MiB per 32-bit memory channel,
        // which every full Ada and Blackwell GeForce die has (cut-down parts have less).
        _ => (card.memory_bus_width_bits / 32).saturating_mul(8),
    };
    mib.saturating_mul(MIB)
}

/// Attribute 108: the most L2 that may be set aside for persisting accesses. Ada lets 11 of
/// every 16 parts persist: RTX 6000 Ada (AD102, 96 MiB) reports 66 MiB, a 4090's 72 MiB
/// give 51904512 bytes; the H200 capture (60 MiB, 37.5) and a B200 show 10/16 on data-centre
/// parts. Blackwell GeForce is taken to follow Ada (best knowledge).
pub fn persisting_l2_max_bytes(card: &CardFacts) -> u32 {
    let l2 = u64::from(l2_cache_bytes(card));
    u32::try_from(l2 * 11 / 16).unwrap_or(u32::MAX)
}

/// Attribute 109: the largest access-policy window. Ampere and Ada report 128 MiB less 4 KiB
/// (RTX 6000 Ada: 134213632); Hopper and data-centre Blackwell 128 MiB (H200 capture, B200).
/// Blackwell GeForce is taken to follow the newer parts (best knowledge).
pub fn access_policy_max_window_bytes(card: &CardFacts) -> u32 {
    if at_least(card, 9) {
        128 * MIB
    } else {
        128 * MIB - 4096
    }
}

/// Attribute 39: resident threads per SM: 1536 on GA10x, AD10x and GB20x (deviceQuery of 4090
/// and 5090); 2048 on the data-centre parts.
pub fn max_threads_per_sm(card: &CardFacts) -> u32 {
    if geforce_sm(card) {
        1536
    } else {
        2048
    }
}

/// Attribute 106: resident blocks per SM: 24 on sm_89, 32 on sm_120 (CUDA Programming Guide,
/// compute capabilities table).
pub fn max_blocks_per_sm(card: &CardFacts) -> u32 {
    match card.compute_capability {
        (8, 9) => 24,
        (8, 6 | 7) => 16,
        _ => 32,
    }
}

/// Attribute 81: shared memory per SM: 100 KiB on sm_86/89/120 (deviceQuery of 4090 and 5090:
/// 102400), 228 KiB on sm_90/100 (H200 capture: 233472).
pub fn shared_memory_per_sm(card: &CardFacts) -> u32 {
    if geforce_sm(card) {
        100 * 1024
    } else {
        228 * 1024
    }
}

/// Attribute 97: shared memory a block may opt in to: the SM's less the 1 KiB the driver
/// reserves per block (attribute 111): 101376 on Ada and Blackwell GeForce, 232448 on the H200.
pub fn shared_memory_per_block_optin(card: &CardFacts) -> u32 {
    shared_memory_per_sm(card) - 1024
}

/// Attribute 139: the PCI vendor and device ids as config dword 0 holds them. The H200 capture
/// shows 590680286 = 0x233510de: device 0x2335 above NVIDIA's vendor 0x10de.
pub fn gpu_pci_device_id(card: &CardFacts) -> i32 {
    reinterpret((u32::from(card.pci_device_id) << 16) | NVIDIA_PCI_VENDOR)
}

/// Attribute 140: the subsystem ids as config dword 0x2c holds them (the H200's 415174878 =
/// 0x18bf10de: subsystem 0x18bf of vendor 0x10de). A bare 16-bit subsystem id is taken to be
/// NVIDIA's own (Founders Edition); 0 stays 0.
pub fn gpu_pci_subsystem_id(card: &CardFacts) -> i32 {
    match card.pci_subsystem_id {
        0 => 0,
        id @ 1..=0xffff => reinterpret((id << 16) | NVIDIA_PCI_VENDOR),
        dword => reinterpret(dword),
    }
}

/// Whether the card's compute capability is at least `major`.0.
fn at_least(card: &CardFacts, major: u32) -> bool {
    card.compute_capability.0 >= major
}

/// GeForce-class SMs (sm_86, sm_89, sm_120/121): 1536 threads and 100 KiB shared memory.
fn geforce_sm(card: &CardFacts) -> bool {
    matches!(card.compute_capability, (8, 6..=9) | (12, _))
}

/// A model key from emuv's key or a marketing name: lower case, letters and digits only, no
/// "nvidia"/"geforce"/"rtx" prefix and no "gb" suffix ("RTX 5060 Ti 16GB" -> "5060ti16").
fn model_key(model: &str) -> String {
    let all: String = model
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut s = all.as_str();
    for prefix in ["nvidia", "geforce", "rtx"] {
        s = s.strip_prefix(prefix).unwrap_or(s);
    }
    s.strip_suffix("gb").unwrap_or(s).to_string()
}

/// An unsigned quantity as the driver's `int`, saturating rather than wrapping.
fn int(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A 32-bit register value as the driver hands it back in an `int`: the same bits.
fn reinterpret(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(
        model: &str,
        cc: (u32, u32),
        cores: u32,
        boost: u32,
        bus: u32,
        mbps: u32,
        id: u16,
    ) -> CardFacts {
        CardFacts {
            model: model.to_string(),
            compute_capability: cc,
            cuda_cores: cores,
            boost_clock_mhz: boost,
            memory_bus_width_bits: bus,
            memory_bandwidth_mbps: mbps,
            pci_domain: 0,
            pci_bus: 1,
            pci_device: 0,
            pci_device_id: id,
            pci_subsystem_id: 0,
        }
    }

    fn rtx4090() -> CardFacts {
        card("4090", (8, 9), 16_384, 2520, 384, 1_008_000, 0x2684)
    }

    fn rtx5090() -> CardFacts {
        card("5090", (12, 0), 21_760, 2407, 512, 1_792_000, 0x2b85)
    }

    /// emuv's 17 models (tools' gpu_db: key, arch, bus, MB/s, cores) and the L2 in MiB.
    fn all_models() -> Vec<(CardFacts, u32)> {
        let ada = (8, 9);
        let bw = (12, 0);
        vec![
            (card("4060", ada, 3_072, 2460, 128, 272_000, 0x2882), 24),
            (card("4060ti", ada, 4_352, 2535, 128, 288_000, 0x2803), 32),
            (card("4060ti16", ada, 4_352, 2535, 128, 288_000, 0x2805), 32),
            (card("4070", ada, 5_888, 2475, 192, 504_000, 0x2786), 36),
            (
                card("4070super", ada, 7_168, 2475, 192, 504_000, 0x2783),
                48,
            ),
            (card("4070ti", ada, 7_680, 2610, 192, 504_000, 0x2782), 48),
            (
                card("4070tisuper", ada, 8_448, 2610, 256, 672_000, 0x2705),
                48,
            ),
            (card("4080", ada, 9_728, 2505, 256, 716_800, 0x2704), 64),
            (
                card("4080super", ada, 10_240, 2550, 256, 736_000, 0x2702),
                64,
            ),
            (rtx4090(), 72),
            (card("5060", bw, 3_840, 2497, 128, 448_000, 0x2d05), 32),
            (card("5060ti", bw, 4_608, 2572, 128, 448_000, 0x2d04), 32),
            (card("5060ti16", bw, 4_608, 2572, 128, 448_000, 0x2d04), 32),
            (card("5070", bw, 6_144, 2512, 192, 672_000, 0x2f04), 48),
            (card("5070ti", bw, 8_960, 2452, 256, 896_000, 0x2c05), 48),
            (card("5080", bw, 10_752, 2617, 256, 960_000, 0x2c02), 64),
            (rtx5090(), 96),
        ]
    }

    fn get(c: &CardFacts, a: i32) -> i32 {
        lookup(c, a).unwrap_or(i32::MIN)
    }

    #[test]
    fn rtx4090_matches_device_query() {
        let c = rtx4090();
        assert_eq!((get(&c, 75), get(&c, 76)), (8, 9));
        assert_eq!(get(&c, 16), 128);
        assert_eq!(get(&c, 38), 75_497_472);
        assert_eq!(get(&c, 8), 49_152);
        assert_eq!(get(&c, 81), 102_400);
        assert_eq!(get(&c, 97), 101_376);
        assert_eq!(get(&c, 111), 1024);
        assert_eq!(get(&c, 39), 1536);
        assert_eq!(get(&c, 106), 24);
        assert_eq!(get(&c, 82), 65_536);
        assert_eq!(get(&c, 12), 65_536);
        assert_eq!(get(&c, 13), 2_520_000);
        assert_eq!(get(&c, 36), 10_501_000);
        assert_eq!(get(&c, 37), 384);
        assert_eq!(get(&c, 40), 2);
        assert_eq!(get(&c, 32), 0);
        assert_eq!(get(&c, 87), 64);
        assert_eq!(get(&c, 120), 0);
        assert_eq!(get(&c, 127), 0);
        assert_eq!(get(&c, 126), 1);
        assert_eq!(get(&c, 108), 51_904_512);
        assert_eq!(get(&c, 109), 134_213_632);
        assert_eq!(get(&c, 139), 0x2684_10de);
    }

    #[test]
    fn rtx5090_matches_device_query() {
        let c = rtx5090();
        assert_eq!((get(&c, 75), get(&c, 76)), (12, 0));
        assert_eq!(get(&c, 16), 170);
        assert_eq!(get(&c, 38), 100_663_296);
        assert_eq!(get(&c, 8), 49_152);
        assert_eq!(get(&c, 81), 102_400);
        assert_eq!(get(&c, 97), 101_376);
        assert_eq!(get(&c, 111), 1024);
        assert_eq!(get(&c, 39), 1536);
        assert_eq!(get(&c, 106), 32);
        assert_eq!(get(&c, 13), 2_407_000);
        assert_eq!(get(&c, 36), 14_001_000);
        assert_eq!(get(&c, 37), 512);
        assert_eq!(get(&c, 120), 1);
        assert_eq!(get(&c, 127), 1);
        assert_eq!(get(&c, 139), 0x2b85_10de);
    }

    #[test]
    fn every_model_has_its_l2_and_sms() {
        for (c, mib) in all_models() {
            assert_eq!(l2_cache_bytes(&c), mib << 20, "{}", c.model);
            assert_eq!(get(&c, 16) as u32 * 128, c.cuda_cores, "{}", c.model);
            assert!(get(&c, 36) > 8_000_000, "{}", c.model);
            assert!(persisting_l2_max_bytes(&c) < l2_cache_bytes(&c));
        }
    }

    #[test]
    fn marketing_names_find_the_model() {
        let mut c = rtx4090();
        for (name, mib) in [
            ("NVIDIA GeForce RTX 4070 Ti SUPER", 48),
            ("RTX 4070", 36),
            ("RTX 5060 Ti 16GB", 32),
            ("rtx-4060", 24),
            ("4080S", 64),
        ] {
            c.model = name.to_string();
            assert_eq!(l2_cache_bytes(&c), mib << 20, "{name}");
        }
        // Unknown: 8 MiB per 32-bit channel of the bus.
        c.model = "4095".to_string();
        assert_eq!(l2_cache_bytes(&c), 96 << 20);
    }

    #[test]
    fn every_defined_number_answers() {
        for c in [rtx4090(), rtx5090()] {
            for a in 1..=LAST {
                assert!(lookup(&c, a).is_ok(), "attribute {a}");
            }
        }
    }

    #[test]
    fn undefined_numbers_are_invalid_value() {
        let c = rtx4090();
        // 148 and 151..=156 are what the real 580 driver refused in the capture (rc=1).
        for a in [
            0,
            -1,
            i32::MIN,
            148,
            149,
            150,
            151,
            152,
            153,
            154,
            155,
            156,
            9999,
            i32::MAX,
        ] {
            assert_eq!(
                lookup(&c, a),
                Err(CUDA_ERROR_INVALID_VALUE),
                "attribute {a}"
            );
            assert_eq!(value(&c, a), None);
        }
    }

    #[test]
    fn what_the_h200_answered_a_4090_answers() {
        // The H200 capture's ATTR lines with rc=0: every number from 1 to 147.
        let h200_ok: Vec<i32> = (1..=147).collect();
        let c = rtx4090();
        for a in h200_ok {
            assert!(value(&c, a).is_some(), "attribute {a}");
        }
    }

    #[test]
    fn chip_independent_values_follow_the_h200() {
        let c = rtx5090();
        let h200 = [
            (1, 1024),
            (2, 1024),
            (3, 1024),
            (4, 64),
            (5, 2_147_483_647),
            (6, 65535),
            (7, 65535),
            (9, 65536),
            (10, 32),
            (11, 2_147_483_647),
            (14, 512),
            (21, 131_072),
            (22, 131_072),
            (23, 65536),
            (24, 16384),
            (27, 32768),
            (29, 2048),
            (30, 512),
            (51, 32),
            (54, 2046),
            (68, 2046),
            (69, 268_435_456),
            (71, 65000),
            (72, 2_097_120),
            (92, 0),
            (102, 1),
            (122, 1),
            (131, -1),
            (141, 1),
            (147, 0),
        ];
        for (a, v) in h200 {
            assert_eq!(get(&c, a), v, "attribute {a}");
        }
    }

    #[test]
    fn pci_ids_combine_like_the_real_driver() {
        let mut c = rtx4090();
        c.pci_device_id = 0x2335;
        assert_eq!(get(&c, 139), 590_680_286); // H200 capture
        c.pci_subsystem_id = 0x18bf;
        assert_eq!(get(&c, 140), 415_174_878); // H200 capture
        c.pci_subsystem_id = 0x18bf_10de;
        assert_eq!(get(&c, 140), 415_174_878);
        c.pci_subsystem_id = 0;
        assert_eq!(get(&c, 140), 0);
        c.pci_subsystem_id = 0x8000_1043;
        assert!(get(&c, 140) < 0); // the raw bits, as an int
        c.pci_bus = 0x41;
        c.pci_device = 6;
        c.pci_domain = 2;
        assert_eq!((get(&c, 33), get(&c, 34), get(&c, 50)), (0x41, 6, 2));
    }

    #[test]
    fn degenerate_facts_do_not_panic() {
        let c = card("", (0, 0), 0, 0, 0, 0, 0);
        for a in 1..=LAST {
            assert!(lookup(&c, a).is_ok());
        }
        assert_eq!(get(&c, 36), 0);
        let big = card(
            "x",
            (8, 9),
            u32::MAX,
            u32::MAX,
            u32::MAX,
            u32::MAX,
            u16::MAX,
        );
        for a in 1..=LAST {
            assert!(lookup(&big, a).is_ok());
        }
    }
}
