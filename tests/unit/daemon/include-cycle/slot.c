#include "slot.h"
