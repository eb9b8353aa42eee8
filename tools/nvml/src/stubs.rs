// SPDX-License-Identifier: GPL-2.0
//! Getters that gpustat and nvitop call (or probe) and an emulated card has no value for:
//! fans, temperature, power, clocks, PCIe traffic, ECC, encoders, MIG, accounting. Each
//! returns `NVML_ERROR_NOT_SUPPORTED`, which both tools show as N/A; a missing symbol would
//! be `NVML_ERROR_FUNCTION_NOT_FOUND` instead, which they report as an error.
//!
//! The arguments are ignored, so the declared parameter list can be empty: in the C calling
//! convention the caller owns its arguments.

use crate::types::{nvmlReturn_t, NVML_ERROR_NOT_SUPPORTED};

macro_rules! not_supported {
    ($($name:ident)+) => {$(
        #[no_mangle]
        pub extern "C" fn $name() -> nvmlReturn_t {
            NVML_ERROR_NOT_SUPPORTED
        }
    )+};
}

not_supported! {
    nvmlDeviceGetArchitecture
    nvmlDeviceGetBAR1MemoryInfo
    nvmlDeviceGetBoardId
    nvmlDeviceGetBoardPartNumber
    nvmlDeviceGetBrand
    nvmlDeviceGetClock
    nvmlDeviceGetClockInfo
    nvmlDeviceGetComputeInstanceId
    nvmlDeviceGetConfComputeMemSizeInfo
    nvmlDeviceGetCudaComputeCapability
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
    nvmlDeviceGetEnforcedPowerLimit
    nvmlDeviceGetFanSpeed
    nvmlDeviceGetFanSpeed_v2
    nvmlDeviceGetFieldValues
    nvmlDeviceGetGpuInstanceId
    nvmlDeviceGetInforomVersion
    nvmlDeviceGetMaxClockInfo
    nvmlDeviceGetMaxMigDeviceCount
    nvmlDeviceGetMaxPcieLinkGeneration
    nvmlDeviceGetMaxPcieLinkWidth
    nvmlDeviceGetMemoryBusWidth
    nvmlDeviceGetMemoryErrorCounter
    nvmlDeviceGetMigDeviceHandleByIndex
    nvmlDeviceGetMigMode
    nvmlDeviceGetMinorNumber
    nvmlDeviceGetNumFans
    nvmlDeviceGetNumGpuCores
    nvmlDeviceGetPcieThroughput
    nvmlDeviceGetPerformanceState
    nvmlDeviceGetPersistenceMode
    nvmlDeviceGetPowerManagementDefaultLimit
    nvmlDeviceGetPowerManagementLimit
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
    nvmlDeviceGetTotalEccErrors
    nvmlDeviceGetTotalEnergyConsumption
    nvmlDeviceGetVbiosVersion
    nvmlDeviceGetViolationStatus
}
