// SPDX-License-Identifier: GPL-2.0
//! Getters that gpustat and nvitop call (or probe) and an emulated card has no value for:
//! fans, temperature, power draw, current clocks, PCIe traffic, ECC mode, encoders, MIG,
//! accounting, NVLink (GeForce cards have none; PyTorch resolves its getters at start). Each
//! returns `NVML_ERROR_NOT_SUPPORTED` for a card that answers, which both tools show as N/A; a missing symbol would be `NVML_ERROR_FUNCTION_NOT_FOUND` instead, which
//! they report as an error.
//!
//! Every one takes the device first, and checks it as the other getters do (uninitialised,
//! not a handle, lost card); the other arguments are ignored, so they need not be declared: in
//! the C calling convention the caller owns its arguments.

use crate::{
    nvmlDevice_t,
    types::{nvmlReturn_t, NVML_ERROR_NOT_SUPPORTED},
    with_gpu,
};

macro_rules! not_supported {
    ($($name:ident)+) => {$(
        #[no_mangle]
        pub extern "C" fn $name(device: nvmlDevice_t) -> nvmlReturn_t {
            with_gpu(device, |_| Err(NVML_ERROR_NOT_SUPPORTED))
        }
    )+};
}

not_supported! {
    nvmlDeviceGetBoardId
    nvmlDeviceGetBoardPartNumber
    nvmlDeviceGetClock
    nvmlDeviceGetClockInfo
    nvmlDeviceGetComputeInstanceId
    nvmlDeviceGetConfComputeMemSizeInfo
    nvmlDeviceGetCurrentClocksEventReasons
    nvmlDeviceGetCurrentClocksThrottleReasons
    nvmlDeviceGetCurrentDriverModel
    nvmlDeviceGetCurrPcieLinkGeneration
    nvmlDeviceGetCurrPcieLinkWidth
    nvmlDeviceGetDecoderUtilization
    nvmlDeviceGetDeviceHandleFromMigDeviceHandle
    nvmlDeviceGetDisplayActive
    nvmlDeviceGetDisplayMode
    nvmlDeviceGetDriverModel
    nvmlDeviceGetDriverModel_v2
    nvmlDeviceGetEccMode
    nvmlDeviceGetEncoderUtilization
    nvmlDeviceGetFanSpeed
    nvmlDeviceGetFanSpeed_v2
    nvmlDeviceGetFieldValues
    nvmlDeviceGetGpuInstanceId
    nvmlDeviceGetInforomVersion
    nvmlDeviceGetMaxMigDeviceCount
    nvmlDeviceGetMaxPcieLinkGeneration
    nvmlDeviceGetMaxPcieLinkWidth
    nvmlDeviceGetMigDeviceHandleByIndex
    nvmlDeviceGetMigMode
    nvmlDeviceGetNumFans
    nvmlDeviceGetNvLinkRemoteDeviceType
    nvmlDeviceGetNvLinkRemotePciInfo_v2
    nvmlDeviceGetPcieThroughput
    nvmlDeviceGetPerformanceState
    nvmlDeviceGetPersistenceMode
    nvmlDeviceGetPowerManagementMode
    nvmlDeviceGetPowerState
    nvmlDeviceGetPowerUsage
    nvmlDeviceGetProcessUtilization
    nvmlDeviceGetRunningProcessDetailList
    nvmlDeviceGetSamples
    nvmlDeviceGetSerial
    nvmlDeviceGetTemperature
    nvmlDeviceGetTemperatureThreshold
    nvmlDeviceGetTemperatureV
    nvmlDeviceGetTotalEnergyConsumption
    nvmlDeviceGetVbiosVersion
    nvmlDeviceGetViolationStatus
}
