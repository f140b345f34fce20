/* A module that includes the one above it. */
#pragma once
#include "slot.h"
