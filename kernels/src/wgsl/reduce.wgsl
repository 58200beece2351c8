// Workgroup-wide reductions over 256 invocations, included by the kernels that need them. Every
// invocation of the workgroup must call them (uniform control flow); every one gets the result.

var<workgroup> reduce_scratch: array<f32, 256>;

fn workgroup_reduce(v: f32, lid: u32, take_max: bool) -> f32 {
    reduce_scratch[lid] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let other = reduce_scratch[lid + stride];
            reduce_scratch[lid] = select(reduce_scratch[lid] + other, max(reduce_scratch[lid], other), take_max);
        }
        workgroupBarrier();
    }
    let total = reduce_scratch[0];
    workgroupBarrier();
    return total;
}

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    return workgroup_reduce(v, lid, false);
}
