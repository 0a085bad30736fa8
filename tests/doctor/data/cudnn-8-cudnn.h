/*   cudnn : Neural Networks Library (cuDNN 8: the version lives in cudnn_version.h) */

#if !defined(CUDNN_H_)
#define CUDNN_H_

#include <cuda_runtime.h>
#include <stdint.h>

#include "cudnn_version.h"
#include "cudnn_ops_infer.h"

#endif /* CUDNN_H_ */
