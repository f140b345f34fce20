/* Includes job.h, which includes slot.h: a cycle. */
#pragma once
#include "job.h"
